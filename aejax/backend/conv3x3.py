"""3x3 'same' convolution in channels-first layout (``[C, B, H, W]``), fast on XLA:CPU.

XLA:CPU's own convolution runs these small-channel shapes (1 <-> 30 <-> 15 channels) at a
fraction of the machine's speed, and its gradients are slower still (measured per layer in
experiments/results/speed.md). On CPU this module computes the same sums as one matrix
product over all ``N = B H W`` positions plus shifts, in whichever of three forms moves less
data:

* **im2col** (``Ci <= Co``): stack the 9 shifted copies of ``x`` (``[9 Ci, N]``) and multiply
  once by the ``[Co, 9 Ci]`` kernel.
* **output shift** (``Co < Ci``): multiply ``x`` once by all 9 taps (``[9 Co, Ci] @ [Ci, N]``)
  and add the 9 shifted ``[Co, N]`` products.
* **split** (a plain convolution whose channel counts differ by less than a factor 2,
  ``30 -> 30``, ``15 -> 15``): the kernel's columns on the input side, its rows on the
  output side: stack the 3 column shifts of ``x`` (``[3 Ci, N]``), multiply once by
  ``[3 Co, 3 Ci]``, and add the 3 row-shifted ``[Co, N]`` blocks. ``3 (Ci + Co)`` values a
  position where the others move ``9 min(Ci, Co)``: fewer below a factor 2, as many at it
  (``30 -> 15``, where the forward pass measured slower split). Used for the gradients and
  for a forward pass a pool reads, not for one the next convolution reads: its output is a
  sum of shifted blocks, which XLA:CPU recomputes in each fusion that reads it, and an
  im2col reads it 9 or 16 times. experiments/results/conv_split.md: steps and scorings
  before and after.

Their gradients are again of these forms with the cheap side shifted (the kernel gradient of
im2col stacks the shifted input, that of the output-shift form the shifted output gradient,
that of the split form both: ``[3 Ci, N] @ [N, 3 Co]`` is every tap's at once).
They are written out by hand: autodiff derives the same sums, but the transposed shifts it
produces fuse into kernels XLA:CPU runs several times slower. A shift is a slice padded back
with zeros (slicing then padding measured faster than padding then slicing).

With ``upsampled=True`` the input is first up-sampled 2x (nearest). That is never formed:
each of the four pixel phases of the output (even/odd rows and columns) is a convolution of
the small input with a 2x2 kernel (the 3x3 kernel's rows and columns that land on the same
input pixel added up), and the four results are interleaved. The same sums for 4/9 of the
products and a quarter of the shifted copies. These kernels are for XLA:CPU only;
:mod:`aejax.backend` runs them on CPU and flax's own layers (cuDNN, TPU convolutions)
elsewhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aejax.backend.pooling import pool_bias_relu

_TAPS = [(dy, dx) for dy in range(3) for dx in range(3)]  # HWIO's H, W order
_PHASES = [(p, q) for p in range(2) for q in range(2)]  # a 2x2 block, row-major


def upsample_2x2(x_CxBxHxW: jax.Array) -> jax.Array:
    """Nearest-neighbour up-sampling by 2 (Keras' ``UpSampling2D(2)``)."""
    c, b, h, w = x_CxBxHxW.shape
    x = jnp.broadcast_to(x_CxBxHxW[:, :, :, None, :, None], (c, b, h, 2, w, 2))
    return x.reshape(c, b, 2 * h, 2 * w)


def _shift(x_CxBxHxW, oy: int, ox: int):
    """``out[..., i, j] = x[..., i + oy, j + ox]``, zero outside (|oy|, |ox| <= 1)."""
    _, _, h, w = x_CxBxHxW.shape
    inside = x_CxBxHxW[:, :, max(oy, 0) : h + min(oy, 0), max(ox, 0) : w + min(ox, 0)]
    return jnp.pad(inside, ((0, 0), (0, 0), (max(-oy, 0), max(oy, 0)), (max(-ox, 0), max(ox, 0))))


# A convolution "plan": per output phase, the taps' input offsets. A plain 3x3 convolution
# has one phase of 9 taps. That of an up-sampled input has four, the pixel phases
# (2i + p, 2j + q) of its output; each sees only 2x2 distinct input pixels, at offsets
# (-1, 0) for even output rows and (0, 1) for odd ones (a "sub-pixel" convolution).
_PLAIN = (tuple((dy - 1, dx - 1) for dy, dx in _TAPS),)
_UP_OFFSETS = ((-1, 0), (0, 1))
_UPSAMPLED = tuple(
    tuple((_UP_OFFSETS[p][i], _UP_OFFSETS[q][j]) for i, j in _PHASES) for p, q in _PHASES
)
# _UP_ROWS[p, i, y]: whether kernel row y falls on input row offset i, for output row parity p.
_UP_ROWS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


def _phase_kernels(w_HWIO, upsampled: bool):
    """``[phases, taps, Ci, Co]`` kernels and the matching plan."""
    if not upsampled:
        return w_HWIO.reshape(1, 9, *w_HWIO.shape[2:]), _PLAIN
    rows = jnp.asarray(_UP_ROWS, w_HWIO.dtype)
    k = jnp.einsum("piy,qjx,yxco->pqijco", rows, rows, w_HWIO)
    return k.reshape(4, 4, *w_HWIO.shape[2:]), _UPSAMPLED


def _interleave(ys_CxBxHxW):
    """One image ``[C, B, 2H, 2W]`` from its 4 pixel phases (row-major), or the only one."""
    if len(ys_CxBxHxW) == 1:
        return ys_CxBxHxW[0]
    c, b, h, w = ys_CxBxHxW[0].shape
    rows = [jnp.stack(ys_CxBxHxW[2 * p : 2 * p + 2], axis=-1) for p in range(2)]
    return jnp.stack(rows, axis=3).reshape(c, b, 2 * h, 2 * w)


def _phase(g_CxBxHxW, n_phases: int, k: int):
    """Pixel phase k of g (the inverse of :func:`_interleave`)."""
    return g_CxBxHxW if n_phases == 1 else g_CxBxHxW[:, :, k // 2 :: 2, k % 2 :: 2]


def _stack_shifts(x_CxBxHxW, offsets, sign: int = 1):
    """``[taps C, B, H, W]``: x shifted by each offset (by its negation with sign=-1)."""
    return jnp.concatenate([_shift(x_CxBxHxW, sign * oy, sign * ox) for oy, ox in offsets])


def _sum_shifts(z_TCxBxHxW, offsets, sign: int = 1):
    """``[C, B, H, W]``: the sum over taps t of block t of z shifted by t's offset."""
    z = z_TCxBxHxW.reshape(len(offsets), -1, *z_TCxBxHxW.shape[1:])
    return sum(_shift(z[t], sign * oy, sign * ox) for t, (oy, ox) in enumerate(offsets))


def _matmul(a_MxK, b_KxBxHxW):
    """``a @ b`` over all positions: ``[M, B, H, W]``."""
    return (a_MxK @ b_KxBxHxW.reshape(b_KxBxHxW.shape[0], -1)).reshape(-1, *b_KxBxHxW.shape[1:])


def _positions_matmul(a_MxBxHxW, b_KxBxHxW):
    """``sum_n a[:, n] b[:, n]^T`` over all positions: ``[M, K]``."""
    return a_MxBxHxW.reshape(a_MxBxHxW.shape[0], -1) @ b_KxBxHxW.reshape(b_KxBxHxW.shape[0], -1).T


def _cols_matrix(k_TxIxO):
    """``[Co, taps Ci]``: each output channel's weights over the stacked shifted inputs."""
    return k_TxIxO.reshape(-1, k_TxIxO.shape[-1]).T


def _taps_matrix(k_PxTxIxO):
    """``[phases taps Co, Ci]``: all taps stacked (row block (p, t) is that tap's ``[Co, Ci]``)."""
    return jnp.swapaxes(k_PxTxIxO, -1, -2).reshape(-1, k_PxTxIxO.shape[-2])


def _channel_form(k_PxTxIxO) -> str:
    """im2col or the output shift: the one that shifts the side with fewer channels."""
    ci, co = k_PxTxIxO.shape[2:]
    return "output shift" if co < ci else "im2col"


def _form(k_PxTxIxO, plan) -> str:
    """The form of a gradient, or of a forward pass followed by a pool (the docstring)."""
    ci, co = k_PxTxIxO.shape[2:]
    if len(plan) == 1 and max(ci, co) < 2 * min(ci, co):
        return "split"
    return _channel_form(k_PxTxIxO)


def _grid(offsets) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A phase's taps as the row and column offsets whose every pair (row-major) they are."""
    rows = tuple(dict.fromkeys(oy for oy, _ in offsets))
    cols = tuple(dict.fromkeys(ox for _, ox in offsets))
    assert tuple(offsets) == tuple((r, s) for r in rows for s in cols), offsets
    return rows, cols


def _split_blocks(k_TxIxO, rows, cols, order: str):
    """The kernel as one matrix of ``[Co, Ci]`` (``order="rows"``: ``[rows Co, cols Ci]``) or
    ``[Ci, Co]`` blocks (``"cols"``: ``[cols Ci, rows Co]``), one per tap."""
    ci, co = k_TxIxO.shape[1:]
    k = k_TxIxO.reshape(len(rows), len(cols), ci, co)
    if order == "rows":
        return k.transpose(0, 3, 1, 2).reshape(len(rows) * co, len(cols) * ci)
    return k.transpose(1, 2, 0, 3).reshape(len(cols) * ci, len(rows) * co)


def _split_forward(x_CxBxHxW, k_TxIxO, offsets):
    rows, cols = _grid(offsets)
    x_cols = _stack_shifts(x_CxBxHxW, [(0, ox) for ox in cols])  # [cols Ci, N]
    z = _matmul(_split_blocks(k_TxIxO, rows, cols, "rows"), x_cols)
    return _sum_shifts(z, [(oy, 0) for oy in rows])


def _split_backward(x_CxBxHxW, k_TxIxO, offsets, g_OxBxHxW):
    rows, cols = _grid(offsets)
    g_rows = _stack_shifts(g_OxBxHxW, [(oy, 0) for oy in rows], sign=-1)  # [rows Co, N]
    z = _matmul(_split_blocks(k_TxIxO, rows, cols, "cols"), g_rows)
    dx = _sum_shifts(z, [(0, ox) for ox in cols], sign=-1)
    x_cols = _stack_shifts(x_CxBxHxW, [(0, ox) for ox in cols])
    ci, co = k_TxIxO.shape[1:]
    dk = _positions_matmul(x_cols, g_rows).reshape(len(cols), ci, len(rows), co)
    return dx, dk.transpose(2, 0, 1, 3).reshape(k_TxIxO.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_cpu(x_CxBxHxW, k_PxTxIxO, plan):
    # Never split here: the split form's output is a sum of shifted blocks, which XLA:CPU
    # recomputes inside each consumer fusion; the next layer's im2col reads it 9 or 16
    # times (scoring the 28x28 net ran 1.37x slower so). Behind a pool, read once, it pays.
    if _channel_form(k_PxTxIxO) == "output shift":
        z = _matmul(_taps_matrix(k_PxTxIxO), x_CxBxHxW)
        z = z.reshape(len(plan), -1, *x_CxBxHxW.shape[1:])
        return _interleave([_sum_shifts(z[p], offsets) for p, offsets in enumerate(plan)])
    return _interleave(
        [
            _matmul(_cols_matrix(k), _stack_shifts(x_CxBxHxW, offsets))
            for k, offsets in zip(k_PxTxIxO, plan, strict=True)
        ]
    )


def _conv_cpu_fwd(x_CxBxHxW, k_PxTxIxO, plan):
    return _conv_cpu(x_CxBxHxW, k_PxTxIxO, plan), (x_CxBxHxW, k_PxTxIxO)


def _conv_cpu_bwd(plan, residuals, g_OxBxHxW):
    # Written out rather than left to autodiff: the transposes of the shifts that autodiff
    # produces fuse into kernels XLA:CPU runs an order of magnitude slower than these.
    x_CxBxHxW, k_PxTxIxO = residuals
    form = _form(k_PxTxIxO, plan)
    if form == "split":
        dx, dk = _split_backward(x_CxBxHxW, k_PxTxIxO[0], plan[0], g_OxBxHxW)
        return dx, dk[None]
    g_phases = [_phase(g_OxBxHxW, len(plan), p) for p in range(len(plan))]
    if form == "output shift":
        dz = jnp.concatenate(
            [
                _stack_shifts(g, offsets, sign=-1)  # cheap: Co is the small side
                for g, offsets in zip(g_phases, plan, strict=True)
            ]
        )
        dx = _matmul(_taps_matrix(k_PxTxIxO).T, dz)
        dk = _positions_matmul(dz, x_CxBxHxW).reshape(*k_PxTxIxO.shape[:2], -1, x_CxBxHxW.shape[0])
        return dx, jnp.swapaxes(dk, -1, -2)
    dk, dx = [], 0
    for k, offsets, g in zip(k_PxTxIxO, plan, g_phases, strict=True):
        dk.append(_positions_matmul(_stack_shifts(x_CxBxHxW, offsets), g).reshape(k.shape))
        dx = dx + _sum_shifts(_matmul(_cols_matrix(k).T, g), offsets, sign=-1)
    return dx, jnp.stack(dk)


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def conv3x3(x_CxBxHxW: jax.Array, w_HWIO: jax.Array, upsampled: bool = False) -> jax.Array:
    """3x3 'same' cross-correlation as ``lax.conv_general_dilated``: ``[Co, B, H, W]``.

    Args:
      x_CxBxHxW: inputs, channels first.
      w_HWIO: kernel ``[3, 3, Ci, Co]`` (flax's layout).
      upsampled: convolve ``upsample_2x2(x)`` instead of ``x``.
    """
    k, plan = _phase_kernels(w_HWIO, upsampled)
    return _conv_cpu(x_CxBxHxW, k, plan)


def _phase_cols(x_CxBxHxW, py: int, px: int):
    """``[9 Ci, B, H/2, W/2]``: the im2col rows of the output positions (2i + py, 2j + px)."""
    _, _, h, w = x_CxBxHxW.shape
    xp = jnp.pad(x_CxBxHxW, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return jnp.concatenate(
        [xp[:, :, py + dy : py + dy + h : 2, px + dx : px + dx + w : 2] for dy, dx in _TAPS]
    )


def _channel_sums(g_CxBxHxW):
    """``g`` summed over all but the channel axis, as a matrix-vector product. For the first
    layer's bias gradient faster per conv-net step than ``jnp.sum`` (whose tree reduction
    XLA:CPU runs slowly); as the other layers' bias gradients it measured slower, as it
    keeps XLA from fusing the reduction into the gradient's producer."""
    g = g_CxBxHxW.reshape(g_CxBxHxW.shape[0], -1)
    return g @ jnp.ones(g.shape[1], g.dtype)


def _kept_in_memory(small_int):
    """A small non-negative integer (array) encoded as its float32 square root (exactly
    rounded, so equal codes stay equal), for comparing codes for equality only.

    XLA:CPU recomputes a cheap elementwise value inside every fusion that uses it; for the
    gradient's routing below that meant re-reading the four corners in each of its five
    uses (a few percent of a conv-net step). An "expensive" operation at its end (sqrt) makes XLA
    compute it once and keep it in memory; ``optimization_barrier`` cannot, as XLA:CPU
    removes barriers before fusing.
    """
    return jnp.sqrt(jnp.asarray(small_int, jnp.float32))


@jax.custom_vjp
def conv3x3_pool_bias_relu(x_CxBxHxW: jax.Array, w_HWIO: jax.Array, bias_C: jax.Array) -> jax.Array:
    """``relu(max_pool_2x2(conv3x3(x, w)) + bias)``, which equals ``max_pool_2x2(relu(conv3x3(x,
    w) + bias))`` (adding one number to a window keeps its order) for a quarter of the adds;
    the gradient goes to each window's first maximum (as select-and-scatter does). The
    convolution of the input (im2col) form only: for a layer with fewer inputs than outputs."""
    # The forward pass alone (scoring, and what an exporter traces): no gradient routes.
    k_1xTxIxO, plan = _phase_kernels(w_HWIO, upsampled=False)
    if _form(k_1xTxIxO, plan) == "split":
        # Without a gradient to route, the split convolution then the pool ran faster than
        # the four corners (30 -> 30 channels, 1.7x in isolation; with a gradient the
        # corners' routing still paid). experiments/results/conv_split.md: the whole net.
        return pool_bias_relu(_split_forward(x_CxBxHxW, k_1xTxIxO[0], plan[0]), bias_C)
    return _corners_pooled_out(x_CxBxHxW, w_HWIO, bias_C)[-1]


def _corners_pooled_out(x_CxBxHxW, w_HWIO, bias_C):
    # The convolution evaluated separately at the four corners of every pooling window: the
    # max is then elementwise over four contiguous arrays instead of a strided 2x2 interleave.
    k_1xTxIxO, _ = _phase_kernels(w_HWIO, upsampled=False)
    kernel = _cols_matrix(k_1xTxIxO[0])
    cols = [_phase_cols(x_CxBxHxW, py, px) for py, px in _PHASES]
    corners = [_matmul(kernel, c) for c in cols]
    pooled = jnp.maximum(jnp.maximum(corners[0], corners[1]), jnp.maximum(corners[2], corners[3]))
    out = jax.nn.relu(pooled + bias_C[:, None, None, None])
    return k_1xTxIxO, cols, corners, pooled, out


def _conv3x3_pool_bias_relu_fwd(x_CxBxHxW, w_HWIO, bias_C):
    k_1xTxIxO, cols, corners, pooled, out = _corners_pooled_out(x_CxBxHxW, w_HWIO, bias_C)
    # Where each output's gradient goes: the index of the window's first maximum, or 4 where
    # the relu is off; kept instead of the four corners.
    route = jnp.full_like(pooled, 3, jnp.int8)
    for k in (2, 1, 0):
        route = jnp.where(corners[k] == pooled, jnp.int8(k), route)
    route = _kept_in_memory(jnp.where(out > 0, route, jnp.int8(4)))
    return out, (x_CxBxHxW, k_1xTxIxO, cols, route)


def _conv3x3_pool_bias_relu_bwd(residuals, g_out):
    x_CxBxHxW, k_1xTxIxO, cols, route = residuals
    g_corners = [jnp.where(route == _kept_in_memory(k), g_out, 0.0) for k in range(4)]
    dw = sum(_positions_matmul(c, g) for c, g in zip(cols, g_corners, strict=True))
    db = _channel_sums(jnp.where(route != _kept_in_memory(4), g_out, 0.0))
    # The input gradient (not needed for a network's first layer, where XLA drops it):
    # interleave the corners back to full resolution and use the plain convolution's.
    dx, _ = _conv_cpu_bwd(_PLAIN, (x_CxBxHxW, k_1xTxIxO), _interleave(g_corners))
    return dx, dw.reshape(3, 3, *k_1xTxIxO.shape[2:]), db


conv3x3_pool_bias_relu.defvjp(_conv3x3_pool_bias_relu_fwd, _conv3x3_pool_bias_relu_bwd)

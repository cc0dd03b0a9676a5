"""3x3 'same' convolution in channels-first layout (``[C, B, H, W]``), fast on XLA:CPU.

XLA:CPU's own convolution runs these small-channel shapes (1 <-> 30 <-> 15 channels) at a
fraction of the machine's speed, and its gradients are slower still (measured per layer in
experiments/results/speed.md). On CPU this module computes the same sums as one matrix
product over all ``N = B H W`` positions plus shifts, in whichever of two forms moves less
data:

* **im2col** (``Ci <= Co``): stack the 9 shifted copies of ``x`` (``[9 Ci, N]``) and multiply
  once by the ``[Co, 9 Ci]`` kernel.
* **output shift** (``Co < Ci``): multiply ``x`` once by all 9 taps (``[9 Co, Ci] @ [Ci, N]``)
  and add the 9 shifted ``[Co, N]`` products.

Their gradients are again of these forms with the cheap side shifted (the kernel gradient of
im2col stacks the shifted input, that of the output-shift form the shifted output gradient).
They are written out by hand: autodiff derives the same sums, but the transposed shifts it
produces fuse into kernels XLA:CPU runs several times slower. A shift is a slice padded back
with zeros (slicing then padding measured faster than padding then slicing).

With ``upsampled=True`` the input is first up-sampled 2x (nearest): in the output-shift form
the product is then taken at the low resolution and up-sampled after, the same numbers for a
quarter of the work. On other platforms :func:`conv3x3` is ``lax.conv_general_dilated``
(cuDNN, TPU convolutions), in the same logical layout.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_TAPS = [(dy, dx) for dy in range(3) for dx in range(3)]  # HWIO's H, W order


def upsample_2x2(x_CxBxHxW: jax.Array) -> jax.Array:
    """Nearest-neighbour up-sampling by 2 (Keras' ``UpSampling2D(2)``)."""
    c, b, h, w = x_CxBxHxW.shape
    x = jnp.broadcast_to(x_CxBxHxW[:, :, :, None, :, None], (c, b, h, 2, w, 2))
    return x.reshape(c, b, 2 * h, 2 * w)


def _shift(x_CxBxHxW, oy: int, ox: int):
    """``out[..., i, j] = x[..., i + oy, j + ox]``, zero outside (|oy|, |ox| <= 1)."""
    _, _, h, w = x_CxBxHxW.shape
    inside = x_CxBxHxW[:, :, max(oy, 0):h + min(oy, 0), max(ox, 0):w + min(ox, 0)]
    return jnp.pad(inside, ((0, 0), (0, 0), (max(-oy, 0), max(oy, 0)), (max(-ox, 0), max(ox, 0))))


def _stack_shifts(x_CxBxHxW, sign: int = 1):
    """``[9 C, B, H, W]``: x shifted by each tap's offset (by its negation with sign=-1)."""
    return jnp.concatenate([_shift(x_CxBxHxW, sign * (dy - 1), sign * (dx - 1))
                            for dy, dx in _TAPS])


def _sum_shifts(z_TCxBxHxW, sign: int = 1):
    """``[C, B, H, W]``: the sum over taps t of block t of z shifted by t's offset."""
    z = z_TCxBxHxW.reshape(9, -1, *z_TCxBxHxW.shape[1:])
    return sum(_shift(z[t], sign * (dy - 1), sign * (dx - 1)) for t, (dy, dx) in enumerate(_TAPS))


def _downsample_sum(x_CxBxHxW):
    """The transpose of upsample_2x2: the sum over each 2x2 block."""
    c, b, h, w = x_CxBxHxW.shape
    return x_CxBxHxW.reshape(c, b, h // 2, 2, w // 2, 2).sum(axis=(3, 5))


def _matmul(a_MxK, b_KxBxHxW):
    """``a @ b`` over all positions: ``[M, B, H, W]``."""
    return (a_MxK @ b_KxBxHxW.reshape(b_KxBxHxW.shape[0], -1)).reshape(-1, *b_KxBxHxW.shape[1:])


def _positions_matmul(a_MxBxHxW, b_KxBxHxW):
    """``sum_n a[:, n] b[:, n]^T`` over all positions: ``[M, K]``."""
    return a_MxBxHxW.reshape(a_MxBxHxW.shape[0], -1) @ b_KxBxHxW.reshape(b_KxBxHxW.shape[0], -1).T


def _kernel_matrix(w_HWIO):
    """``[9 Co, Ci]``: the taps stacked (row block t is tap t's ``[Co, Ci]``)."""
    ci, co = w_HWIO.shape[2:]
    return w_HWIO.reshape(9, ci, co).transpose(0, 2, 1).reshape(9 * co, ci)


def _cols_matrix(w_HWIO):
    """``[Co, 9 Ci]``: each output channel's weights over the stacked shifted inputs."""
    return w_HWIO.reshape(-1, w_HWIO.shape[3]).T


def _from_kernel_matrix(m_TOxI, shape):
    ci, co = shape[2:]
    return m_TOxI.reshape(9, co, ci).transpose(0, 2, 1).reshape(shape)


def _uses_output_shift(w_HWIO) -> bool:
    ci, co = w_HWIO.shape[2:]
    return co < ci


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_cpu(x_CxBxHxW, w_HWIO, upsampled: bool):
    if _uses_output_shift(w_HWIO):
        z = _matmul(_kernel_matrix(w_HWIO), x_CxBxHxW)
        return _sum_shifts(upsample_2x2(z) if upsampled else z)
    x = upsample_2x2(x_CxBxHxW) if upsampled else x_CxBxHxW
    return _matmul(_cols_matrix(w_HWIO), _stack_shifts(x))


def _conv_cpu_fwd(x_CxBxHxW, w_HWIO, upsampled):
    return _conv_cpu(x_CxBxHxW, w_HWIO, upsampled), (x_CxBxHxW, w_HWIO)


def _conv_cpu_bwd(upsampled, residuals, g_OxBxHxW):
    # Written out rather than left to autodiff: the transposes of the shifts that autodiff
    # produces fuse into kernels XLA:CPU runs an order of magnitude slower than these.
    x_CxBxHxW, w_HWIO = residuals
    if _uses_output_shift(w_HWIO):
        dz = _stack_shifts(g_OxBxHxW, sign=-1)  # [9 Co, ...]: cheap, Co is the small side
        if upsampled:
            dz = _downsample_sum(dz)
        dx = _matmul(_kernel_matrix(w_HWIO).T, dz)
        dw = _from_kernel_matrix(_positions_matmul(dz, x_CxBxHxW), w_HWIO.shape)
        return dx, dw
    x = upsample_2x2(x_CxBxHxW) if upsampled else x_CxBxHxW
    dw = _positions_matmul(_stack_shifts(x), g_OxBxHxW).reshape(w_HWIO.shape)
    dx = _sum_shifts(_matmul(_cols_matrix(w_HWIO).T, g_OxBxHxW), sign=-1)
    return (_downsample_sum(dx) if upsampled else dx), dw


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def _conv_xla(x_CxBxHxW, w_HWIO, upsampled: bool):
    x = upsample_2x2(x_CxBxHxW) if upsampled else x_CxBxHxW
    return jax.lax.conv_general_dilated(x, w_HWIO, (1, 1), "SAME",
                                        dimension_numbers=("CNHW", "HWIO", "CNHW"))


def conv3x3(x_CxBxHxW: jax.Array, w_HWIO: jax.Array, upsampled: bool = False) -> jax.Array:
    """3x3 'same' cross-correlation as ``lax.conv_general_dilated``: ``[Co, B, H, W]``.

    Args:
      x_CxBxHxW: inputs, channels first.
      w_HWIO: kernel ``[3, 3, Ci, Co]`` (flax's layout).
      upsampled: convolve ``upsample_2x2(x)`` instead of ``x``.
    """
    return jax.lax.platform_dependent(
        x_CxBxHxW, w_HWIO,
        cpu=lambda x, w: _conv_cpu(x, w, upsampled),
        default=lambda x, w: _conv_xla(x, w, upsampled))


_CORNERS = [(py, px) for py in range(2) for px in range(2)]  # a 2x2 window, row-major


def _phase_cols(x_CxBxHxW, py: int, px: int):
    """``[9 Ci, B, H/2, W/2]``: the im2col rows of the output positions (2i + py, 2j + px)."""
    _, _, h, w = x_CxBxHxW.shape
    xp = jnp.pad(x_CxBxHxW, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return jnp.concatenate([xp[:, :, py + dy:py + dy + h:2, px + dx:px + dx + w:2]
                            for dy, dx in _TAPS])


def _channel_sums(g_CxBxHxW):
    """``g`` summed over all but the channel axis, as a matrix-vector product. For the first
    layer's bias gradient 3% faster per conv-net step than ``jnp.sum`` (whose tree reduction
    XLA:CPU runs slowly); as the other layers' bias gradients it measured slower, as it
    keeps XLA from fusing the reduction into the gradient's producer."""
    g = g_CxBxHxW.reshape(g_CxBxHxW.shape[0], -1)
    return g @ jnp.ones(g.shape[1], g.dtype)


def _kept_in_memory(small_int):
    """A small non-negative integer (array) encoded as its float32 square root (exactly
    rounded, so equal codes stay equal), for comparing codes for equality only.

    XLA:CPU recomputes a cheap elementwise value inside every fusion that uses it; for the
    gradient's routing below that meant re-reading the four corners in each of its five
    uses (5% of a conv-net step). An "expensive" operation at its end (sqrt) makes XLA
    compute it once and keep it in memory; ``optimization_barrier`` cannot, as XLA:CPU
    removes barriers before fusing.
    """
    return jnp.sqrt(jnp.asarray(small_int, jnp.float32))


@jax.custom_vjp
def _conv_pool_bias_relu_cpu(x_CxBxHxW, w_HWIO, bias_C):
    return _conv_pool_bias_relu_cpu_fwd(x_CxBxHxW, w_HWIO, bias_C)[0]


def _conv_pool_bias_relu_cpu_fwd(x_CxBxHxW, w_HWIO, bias_C):
    # The convolution evaluated separately at the four corners of every pooling window: the
    # max is then elementwise over four contiguous arrays instead of a strided 2x2 interleave.
    kernel = _cols_matrix(w_HWIO)
    cols = [_phase_cols(x_CxBxHxW, py, px) for py, px in _CORNERS]
    corners = [_matmul(kernel, c) for c in cols]
    pooled = jnp.maximum(jnp.maximum(corners[0], corners[1]),
                         jnp.maximum(corners[2], corners[3]))
    out = jax.nn.relu(pooled + bias_C[:, None, None, None])
    # Where each output's gradient goes: the index of the window's first maximum, or 4 where
    # the relu is off; kept instead of the four corners.
    route = jnp.full(pooled.shape, 3, jnp.int8)
    for k in (2, 1, 0):
        route = jnp.where(corners[k] == pooled, jnp.int8(k), route)
    route = _kept_in_memory(jnp.where(out > 0, route, jnp.int8(4)))
    return out, (x_CxBxHxW, w_HWIO, cols, route)


def _conv_pool_bias_relu_cpu_bwd(residuals, g_out):
    x_CxBxHxW, w_HWIO, cols, route = residuals
    g_corners = [jnp.where(route == _kept_in_memory(k), g_out, 0.0) for k in range(4)]
    dw = sum(_positions_matmul(c, g) for c, g in zip(cols, g_corners, strict=True))
    db = _channel_sums(jnp.where(route != _kept_in_memory(4), g_out, 0.0))
    # The input gradient (not needed for a network's first layer, where XLA drops it):
    # interleave the corners back to full resolution and use the plain convolution's.
    c, b, h, w = g_out.shape
    g_full = jnp.stack([jnp.stack(g_corners[2 * py:2 * py + 2], axis=-1) for py in range(2)],
                       axis=3).reshape(c, b, 2 * h, 2 * w)
    dx, _ = _conv_cpu_bwd(False, (x_CxBxHxW, w_HWIO), g_full)
    return dx, dw.reshape(w_HWIO.shape), db


_conv_pool_bias_relu_cpu.defvjp(_conv_pool_bias_relu_cpu_fwd, _conv_pool_bias_relu_cpu_bwd)


def _conv_pool_bias_relu_xla(x_CxBxHxW, w_HWIO, bias_C):
    y = _conv_xla(x_CxBxHxW, w_HWIO, False)
    c, b, h, w = y.shape
    pooled = jnp.max(y.reshape(c, b, h // 2, 2, w // 2, 2), axis=(3, 5))
    return jax.nn.relu(pooled + bias_C[:, None, None, None])


def conv3x3_pool_bias_relu(x_CxBxHxW: jax.Array, w_HWIO: jax.Array,
                           bias_C: jax.Array) -> jax.Array:
    """``relu(max_pool_2x2(conv3x3(x, w)) + bias)``, which equals ``max_pool_2x2(relu(conv3x3(x,
    w) + bias))`` (adding one number to a window keeps its order) for a quarter of the adds;
    the gradient goes to each window's first maximum (as select-and-scatter does). On CPU,
    the convolution of the input (im2col) form only."""
    return jax.lax.platform_dependent(x_CxBxHxW, w_HWIO, bias_C, cpu=_conv_pool_bias_relu_cpu,
                                      default=_conv_pool_bias_relu_xla)

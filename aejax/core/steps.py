"""Training steps and epochs: one Adam step, an epoch of ``lax.scan`` chunks on the
device(s), or one streamed from host memory."""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P

from aejax import xla
from aejax.core.evaluator import to_float
from aejax.core.state import TrainState, over_members
from aejax.models import heads

# The self-supervised head's loss weight (aejax.models.heads.nll is in units of log |T|).
HEAD_WEIGHT = math.log(2)


def mutated(x_BxHxWxC: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Images ``x_BxHxWxC`` in [0, 1] with each value replaced, with probability ``rate``
    (drawn from ``key``), by a uniform random pixel value ``k / 255``: the perturbation Ren
    et al. (NeurIPS 2019) train their background model on, which keeps the images' low-level
    statistics and destroys their semantics, so that ``bce - bce_background`` (``lr`` in
    experiments/scores_extra.py) keeps the semantic part of the error."""
    replace_key, value_key = jax.random.split(key)
    replace = jax.random.bernoulli(replace_key, rate, x_BxHxWxC.shape)
    values = jax.random.randint(value_key, x_BxHxWxC.shape, 0, 256).astype(jnp.float32) / 255
    return jnp.where(replace, values, x_BxHxWxC)


def _gradients_and_sums(
    state: TrainState, batch: jax.Array, weight_B: jax.Array, count: jax.Array, key: jax.Array
):
    """The gradient of ``sum(loss_B * weight_B) / count`` and the metrics' weighted sums."""
    x = to_float(batch)
    if state.mutation_rate:  # a background model (static: a normal model traces no mutation)
        x = mutated(x, state.mutation_rate, jax.random.fold_in(key, 0x6D75))

    def mean_loss(params):
        if state.compute_dtype != "float32":
            params = jax.tree.map(lambda p: p.astype(state.compute_dtype), params)
        model = nnx.merge(state.graphdef, params)
        loss_B, aux = model.loss(x, key)
        if model.has_transform_head:  # static: a model without one traces none of this
            t_B = heads.sample(jax.random.fold_in(key, 0x7472), x.shape[1:], x.shape[0])
            nll_B = heads.nll(model, x.astype(model.param_dtype), t_B)
            # In units of log |T|, times log 2: the two terms start equal (an untrained
            # autoencoder's BCE is about log 2), so neither drowns the other's gradients.
            loss_B = loss_B + HEAD_WEIGHT * nll_B
            aux = {**aux, "transform_nll": nll_B}
        return jnp.sum(loss_B * weight_B) / count, (loss_B, aux)

    grads, (loss_B, aux) = jax.grad(mean_loss, has_aux=True)(state.params)
    return grads, {name: jnp.sum(v * weight_B) for name, v in {"loss": loss_B, **aux}.items()}


def _summed_over_devices(fn, batch_sharding: jax.sharding.NamedSharding):
    """``fn(state, batch, weight_B, count, key)`` run by each device on its own part of the
    batch, its outputs (sums over that part) then added up over the devices.

    The sum is one all-reduce of a single flat vector. Left to jit, the same gradients are
    all-reduced as one operand each of a tuple all-reduce, which XLA:CPU runs operand by
    operand, each costing about as much as one flat buffer of them all
    (experiments/results/speed.md has the measurements). Each device draws its own
    randomness (the noise of the denoising model, the VAE's samples): its index is folded
    into the key.
    """
    axis = batch_sharding.spec[0]

    def on_device(state, batch, weight_B, count, key):
        key = jax.random.fold_in(key, jax.lax.axis_index(axis))
        flat, unflatten = ravel_pytree(fn(state, batch, weight_B, count, key))
        return unflatten(jax.lax.psum(flat, axis))

    shard, whole = P(axis), P()
    # check_vma=False: the conv layers' custom gradients return per-device (varying) kernel
    # gradients for replicated kernels, which the type check would refuse; the psum above is
    # what makes them whole again.
    return jax.shard_map(
        on_device,
        mesh=batch_sharding.mesh,
        in_specs=(whole, shard, shard, whole, whole),
        out_specs=whole,
        check_vma=False,
    )


def _apply_gradients(
    state: TrainState,
    batch: jax.Array,
    weight_B: jax.Array,
    count: jax.Array | None = None,
    batch_sharding: jax.sharding.NamedSharding | None = None,
):
    """One optimizer step on the weighted mean of the per-example losses; ``count`` is
    ``sum(weight_B)`` when the caller has it without a reduction over devices. With a
    ``batch_sharding``, each device computes the gradient of its part of the batch."""
    if state.members:  # an ensemble: every member steps on the same batch
        return over_members(lambda s: _apply_gradients(s, batch, weight_B, count, batch_sharding))(
            state
        )
    count = jnp.sum(weight_B) if count is None else count
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    gradients_and_sums = _gradients_and_sums
    if batch_sharding is not None:
        gradients_and_sums = _summed_over_devices(_gradients_and_sums, batch_sharding)
    grads, metrics = gradients_and_sums(state, batch, weight_B, count, key)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    state = state.replace(
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        step=state.step + 1,
    )
    return state, {**metrics, "count": count}


@xla.jit(donate_argnums=0)
def train_step(
    state: TrainState, batch: jax.Array, weight_B: jax.Array | None = None
) -> tuple[TrainState, dict]:
    """One Adam step on a batch ``[B, H, W, C]`` (uint8 or float in [0, 1]).

    Args:
      state: the training state; donated (its buffers are reused for the result).
      batch: images.
      weight_B: optional per-example weights (0 masks an example out of the mean).

    Returns:
      ``(state, metrics)``; metrics hold per-batch *sums* (``loss``, ``count``, ...), so that
      batches of different sizes add up exactly.
    """
    if weight_B is None:
        weight_B = jnp.ones(batch.shape[0], jnp.float32)
    return _apply_gradients(state, batch, weight_B)


def epoch_order(key: jax.Array, n: int, batch_size: int) -> np.ndarray:
    """The indices of an epoch's batches, ``[steps, batch_size]``: a permutation of ``range(n)``,
    padded with ``-1`` to whole batches (the ragged tail is masked, not dropped).

    Drawn with NumPy from ``key``'s bits: the same on every process, and much faster than
    ``jax.random.permutation``'s sorts on CPU, which were a noticeable part of a dense-net
    epoch.
    """
    steps = math.ceil(n / batch_size)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())
    order = np.full(steps * batch_size, -1, np.int32)
    order[:n] = rng.permutation(n)
    return order.reshape(steps, batch_size)


def _gather(images_NxHxWxC, idx, batch_sharding):
    """Images at indices ``idx`` (-1: padding, weight 0) with their weights and the weights'
    sum over the batch axis, gathered on the device(s); with a batch sharding, images and
    weights split along the batch (last index) axis."""
    weight = (idx >= 0).astype(jnp.float32)
    # From the (replicated) indices: summing the sharded weights inside the step would cost
    # a reduction across devices of its own, a second synchronisation per step.
    count = jnp.sum(weight, axis=-1)
    # Rows of the flattened images: gathering [N, H, W, C] directly gave XLA:CPU a batch in a
    # transposed layout whose conversion to float then ran as a strided copy.
    n, *image_shape = images_NxHxWxC.shape
    batch = images_NxHxWxC.reshape(n, -1)[jnp.maximum(idx, 0)].reshape(*idx.shape, *image_shape)
    if batch_sharding is not None:
        spec = jax.sharding.PartitionSpec(*(None,) * (idx.ndim - 1), *batch_sharding.spec)
        sharding = jax.sharding.NamedSharding(batch_sharding.mesh, spec)
        batch = jax.lax.with_sharding_constraint(batch, sharding)
        weight = jax.lax.with_sharding_constraint(weight, sharding)
    return batch, weight, count


@xla.jit(donate_argnums=0, static_argnames=("batch_sharding",))
def _train_steps(state, images_NxHxWxC, order_CxKxB, c, batch_sharding=None):
    """Steps ``order[c, 0], ..., order[c, K-1]`` in one ``lax.scan``; returns the state and
    the metric sums over those K steps."""
    if batch_sharding is None:  # one device: gather each batch as it is needed (in cache)

        def step(state, idx_B):
            return _apply_gradients(state, *_gather(images_NxHxWxC, idx_B, None))

        state, sums = jax.lax.scan(step, state, order_CxKxB[c])
    else:
        # Several devices: the K batches are gathered up front, one exchange between devices
        # per call instead of one per step (faster on 2 CPU devices: experiments/results/speed.md).
        batches = _gather(images_NxHxWxC, order_CxKxB[c], batch_sharding)
        state, sums = jax.lax.scan(
            lambda state, bw: _apply_gradients(state, *bw, batch_sharding=batch_sharding),
            state,
            batches,
        )
    return state, jax.tree.map(lambda v: jnp.sum(v, axis=0), sums)


@xla.jit(donate_argnums=0, static_argnames=("batch_sharding",))
def _train_fed_steps(state, batches_KxBxHxWxC, weight_KxB, count_K, batch_sharding=None):
    """K steps on batches the host fed (a streamed epoch), in one ``lax.scan``: the same
    steps as :func:`_train_steps`, from batches gathered on the host instead of the device."""
    state, sums = jax.lax.scan(
        lambda state, bw: _apply_gradients(state, *bw, batch_sharding=batch_sharding),
        state,
        (batches_KxBxHxWxC, weight_KxB, count_K),
    )
    return state, jax.tree.map(lambda v: jnp.sum(v, axis=0), sums)


def _host_chunk(images_NxHxWxC: np.ndarray, idx_KxB: np.ndarray, batch_sharding, rows=None):
    """Chunk ``idx`` gathered on the host (rows of a memory-mapped file are read here) and
    put on the device(s), as :func:`_gather` would give it. ``rows``: a buffer of
    :func:`_aligned_empty` to gather into, which a CPU device then reads in place."""
    weight = (idx_KxB >= 0).astype(np.float32)
    index = np.maximum(idx_KxB, 0).ravel()
    if rows is None:
        rows = _aligned_empty((index.size, *images_NxHxWxC.shape[1:]), images_NxHxWxC.dtype)
    np.take(images_NxHxWxC, index, axis=0, out=rows, mode="clip")  # "raise" would buffer
    batch = rows.reshape(*idx_KxB.shape, *images_NxHxWxC.shape[1:])
    count = weight.sum(axis=-1)
    if batch_sharding is None:
        return jax.device_put((batch, weight, count))
    spec = jax.sharding.PartitionSpec(None, *batch_sharding.spec)
    split = jax.sharding.NamedSharding(batch_sharding.mesh, spec)
    return (jax.device_put(batch, split), jax.device_put(weight, split),
            jax.device_put(count, _replicated(batch_sharding)))  # fmt: skip


def _aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary. ``device_put`` of one
    on CPU uses its memory in place; NumPy's own arrays (16-byte aligned) are copied, which
    cost a streamed epoch more than gathering its rows (experiments/results/speed.md)."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(dtype).reshape(shape)


def steps_per_call(steps: int, max_calls: int = 20, min_calls: int = 5) -> int:
    """How many steps each compiled call runs: the epoch cut into equal parts (so one
    compiled function serves them all), as few as gives a progress update every
    ~1/min_calls of an epoch (at most ``max_calls`` calls), else the whole epoch in one
    call."""
    for calls in range(min_calls, max_calls + 1):
        if steps % calls == 0:
            return steps // calls
    return steps


@xla.jit
def _epoch_means(chunk_sums: list[dict]) -> dict:
    """The epoch's metrics: each chunk's sums added up, divided by the examples' count (one
    program: the division alone was another to compile)."""
    totals = jax.tree.map(lambda *v: jnp.sum(jnp.stack(v)), *chunk_sums)
    count = totals.pop("count")
    return {name: total / count for name, total in totals.items()}


def _replicated(sharding: jax.sharding.Sharding | None) -> jax.sharding.Sharding | None:
    """The replicated counterpart of a mesh sharding (None: the default device)."""
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    return None


def _on_multi_device_cpu(sharding: jax.sharding.Sharding | None) -> bool:
    devices = sharding.device_set if sharding is not None else set()
    return len(devices) > 1 and next(iter(devices)).platform == "cpu"


def train_epoch(
    state: TrainState,
    images: jax.Array,
    key: jax.Array,
    *,
    batch_size: int | None = None,
    num_examples: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    on_progress: Callable[[int, dict], None] | None = None,
) -> tuple[TrainState, dict]:
    """One shuffled pass over ``images``: on the device(s), or streamed from the host.

    Each batch is gathered by index on the device; the last, ragged batch is trained on, as
    Keras does (padded to a whole batch and masked, so one compiled step serves every batch).
    The steps run inside ``lax.scan``, a few equal chunks of an epoch per call: on XLA:CPU
    that measured faster than one call per step, whose every call allocates its buffers
    afresh (experiments/results/speed.md).

    Args:
      state: training state (donated).
      images: ``[N, H, W, C]`` uint8 (or float) images on the device(s), possibly sharded
        along N (:mod:`aejax.parallel`); or a NumPy array (a memory-map of a split larger
        than memory: :func:`aejax.data.open_rows`), whose batches are gathered on the host,
        the next chunk while the device trains on this one. Either way the same batches,
        in the same order, train the same steps.
      key: shuffles this epoch.
      batch_size: examples per step (the global batch, over all devices); default the
        model's ``default_batch_size``, what its reference trained with (dense 256, conv 128).
      num_examples: how many leading rows of ``images`` are real (the rest pad the array to a
        whole number of rows per device); default all.
      batch_sharding: where each gathered batch lives (data parallelism: the batch axis
        sharded over a mesh); ``None`` leaves it to XLA.
      on_progress: called after each chunk with ``(steps_done, metric_sums)``; the sums are
        device values, so reading them waits for the device.

    Returns:
      ``(state, metrics)`` with ``loss`` the mean training loss over the epoch's examples.
    """
    n = images.shape[0] if num_examples is None else num_examples
    batch_size = batch_size or state.model.default_batch_size  # a class attribute: any member's
    order_SxB = epoch_order(key, n, batch_size)
    steps = order_SxB.shape[0]
    per_call = steps_per_call(steps)
    order_CxKxB = order_SxB.reshape(steps // per_call, per_call, batch_size)
    if isinstance(images, np.ndarray):
        return _streamed_epoch(state, images, order_CxKxB, batch_sharding, on_progress)
    order_CxKxB = jax.device_put(order_CxKxB, _replicated(batch_sharding))
    # XLA:CPU can deadlock when many multi-device calls with collectives are queued at once
    # (seen with jax 0.10.2: a device's run waits on a semaphore while its peer waits in a
    # collective); with several devices on CPU, at most two calls are kept in flight.
    throttle = _on_multi_device_cpu(batch_sharding)
    chunk_sums = []
    for c in range(order_CxKxB.shape[0]):
        state, sums = _train_steps(state, images, order_CxKxB, c, batch_sharding)
        chunk_sums.append(sums)
        if throttle and c >= 1:
            chunk_sums[c - 1]["count"].block_until_ready()
        if on_progress is not None:
            on_progress((c + 1) * per_call, sums)
    return state, _epoch_means(chunk_sums)


# Host buffers a streamed epoch gathers into, in turn: one being filled, one that the device
# reads, one whose chunk waits in the device's queue. Reused, not allocated per chunk: a
# fresh buffer's pages fault in as the gather first writes them.
HOST_BUFFERS = 3


def _streamed_epoch(state, images_NxHxWxC, order_CxKxB, batch_sharding, on_progress):
    """:func:`train_epoch`'s loop over chunks fed from host memory (one chunk prefetched)."""
    throttle = _on_multi_device_cpu(batch_sharding)
    chunks, per_call, batch_size = order_CxKxB.shape
    shape = (per_call * batch_size, *images_NxHxWxC.shape[1:])
    buffers = [
        _aligned_empty(shape, images_NxHxWxC.dtype) for _ in range(min(chunks, HOST_BUFFERS))
    ]
    chunk_sums = []

    def read(c: int, done_with_buffer):
        # The device may read a buffer in place: before filling it again, wait until the
        # program that used it (chunk c - HOST_BUFFERS) has finished.
        jax.block_until_ready(done_with_buffer)
        rows = buffers[c % HOST_BUFFERS]
        return _host_chunk(images_NxHxWxC, order_CxKxB[c], batch_sharding, rows)

    with concurrent.futures.ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(read, 0, None)
        for c in range(chunks):
            chunk = ahead.result()
            if c + 1 < chunks:
                previous = c + 1 - HOST_BUFFERS
                ahead = reader.submit(read, c + 1, chunk_sums[previous] if previous >= 0 else None)
            state, sums = _train_fed_steps(state, *chunk, batch_sharding)
            chunk_sums.append(sums)
            if throttle and c >= 1:
                chunk_sums[c - 1]["count"].block_until_ready()
            if on_progress is not None:
                on_progress((c + 1) * per_call, sums)
    return state, _epoch_means(chunk_sums)

"""The training core: pure functions of a :class:`TrainState`, jitted, importable.

The model is split once (``nnx.split``) into a static ``graphdef`` and a ``params`` pytree;
every hot-path function is a plain ``jax.jit`` over the state and merges the model back only
inside the trace. Images stay uint8 on the device and become float per batch.

>>> import jax
>>> from aejax import core, data
>>> images, _ = data.load("mnist", "test")
>>> state = core.init_state("dense", jax.random.key(0))
>>> state, metrics = core.train_epoch(state, jax.device_put(images), jax.random.key(1),
...                                   batch_size=256)
>>> float(core.eval_loss(state, images)) < 0.4  # from log 2 = 0.693 before the epoch
True
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P

from aejax import losses, models, xla
from aejax.errors import AejaxError


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (what Orbax checkpoints).

    ``rng`` is raw ``uint32[2]`` key data rather than a typed key so that it checkpoints as a
    plain array; the key for step ``t`` is ``fold_in(rng, t)``, so a resumed run draws the same
    randomness as an uninterrupted one.
    """

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array
    rng: jax.Array
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    # Mixed precision: the training forward/backward pass runs in this dtype on a cast copy
    # of the float32 parameters; the loss, the gradients' accumulation in Adam and every
    # evaluation stay float32.
    compute_dtype: str = struct.field(pytree_node=False, default="float32")
    # Ren et al.'s background model: training inputs (and targets) have this fraction of
    # their pixels replaced by uniform random values (:func:`mutated`); 0 for a normal model.
    mutation_rate: float = struct.field(pytree_node=False, default=0.0)
    # An ensemble (init_ensemble): every array has a leading axis of this many members,
    # trained together by one vmapped step; 0 for a single model.
    members: int = struct.field(pytree_node=False, default=0)

    @property
    def model(self) -> models.Autoencoder:
        """The model, merged back (cheap inside a trace; outside it builds Python objects)."""
        return nnx.merge(self.graphdef, self.params)


@functools.cache
def adam(lr: float = 1e-3) -> optax.GradientTransformation:
    """Adam with Keras' defaults (``eps=1e-7``, not optax's 1e-8), as the reference used.

    Cached: the transformation is a static part of :class:`TrainState`, and one object per
    learning rate keeps the states of two runs the same pytree type (and their jitted steps
    compiled once).
    """
    return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-7)


def init_state(
    arch: str,
    key: jax.Array,
    *,
    lr: float = 1e-3,
    tx: optax.GradientTransformation | None = None,
    compute_dtype: str = "float32",
    mutation_rate: float = 0.0,
    **model_options,
) -> TrainState:
    """A fresh model of architecture ``arch`` and its optimizer state.

    Args:
      arch: a registered architecture (``dense``, ``conv``, ...; see :mod:`aejax.models`).
      key: a typed PRNG key (``jax.random.key(seed)``): parameters from one half, the
        training randomness of stochastic models from the other.
      lr: Adam's learning rate, ignored when ``tx`` is given.
      tx: an optax transformation to train with instead of Keras-default Adam.
      compute_dtype: ``float32``, or ``bfloat16`` for mixed-precision training.
      mutation_rate: train a background model on mutated images (:func:`mutated`).
      **model_options: the model's options, e.g. ``latent_dim=32``.
    """
    frozen = tuple(sorted((k, _hashable(v)) for k, v in model_options.items()))
    return _init_state(key, arch, tx or adam(lr), compute_dtype, mutation_rate, frozen)


def _hashable(value):
    """An option as a static argument of ``jit``: lists (JSON's tuples) as tuples."""
    return tuple(map(_hashable, value)) if isinstance(value, list | tuple) else value


# One compiled program, compiled for speed of compiling: flax's eager initialisation
# dispatches each operation as its own XLA program, and a first run waited for every one
# to compile (experiments/results/speed.md); these arrays are computed once per run.
@xla.quick_jit(static_argnums=(1, 2, 3, 4, 5))
def _init_state(key, arch, tx, compute_dtype, mutation_rate, model_options) -> TrainState:
    init_key, train_key = jax.random.split(key)
    model = models.create(arch, rngs=nnx.Rngs(params=init_key), **dict(model_options))
    graphdef, params = nnx.split(model, nnx.Param)
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(train_key),
        graphdef=graphdef,
        tx=tx,
        compute_dtype=compute_dtype,
        mutation_rate=mutation_rate,
    )


def init_ensemble(arch: str, keys_K: jax.Array, **options) -> TrainState:
    """K models in one state, member ``i`` initialised exactly as ``init_state(arch,
    keys_K[i], **options)``: every array gains a leading axis ``K``, and one vmapped step
    trains them all on the same batches (deep ensembles, Lakshminarayanan et al. 2017,
    where the members differ by their initialisation)."""
    # Member by member, then stacked: exactly init_state's arrays, and fast. A vmapped
    # init compiles every batched op anew (3 s for 8 dense members); jitted, XLA takes 2 s
    # to compile the batched random draws. init_state's ops, once compiled, are reused.
    each = [init_state(arch, keys_K[i], **options) for i in range(len(keys_K))]
    state = jax.tree.map(lambda *v: jnp.stack(v), *each)
    return state.replace(members=len(keys_K))


def member(state: TrainState, i: int) -> TrainState:
    """Member ``i`` of an ensemble, as a single model's state."""
    return jax.tree.map(lambda v: v[i], state.replace(members=0))


def _over_members(fn):
    """``fn(state, *args)`` of a single model, run for each member of an ensemble state (its
    outputs gain a leading member axis); a single model's state goes straight through."""

    def run(state, *args):
        if not state.members:
            return fn(state, *args)
        out = jax.vmap(lambda s: fn(s, *args))(state.replace(members=0))
        if isinstance(out, tuple) and isinstance(out[0], TrainState):
            return (out[0].replace(members=state.members), *out[1:])
        return out

    return run


def mutated(x_BxHxWxC: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Images in [0, 1] with each value replaced, with probability ``rate``, by a uniform
    random pixel value ``k / 255``: the perturbation Ren et al. (NeurIPS 2019) train their
    background model on, which keeps the images' low-level statistics and destroys their
    semantics, so that ``bce - bce_background`` (:data:`aejax.scores` ``lr``) keeps the
    semantic part of the error."""
    replace_key, value_key = jax.random.split(key)
    replace = jax.random.bernoulli(replace_key, rate, x_BxHxWxC.shape)
    values = jax.random.randint(value_key, x_BxHxWxC.shape, 0, 256).astype(jnp.float32) / 255
    return jnp.where(replace, values, x_BxHxWxC)


def check_image_shape(state: TrainState, shape: tuple[int, ...]) -> None:
    """One clear error unless the model reconstructs ``shape`` (``H, W, C``) images as
    ``shape``: e.g. ``conv`` pools ``depth`` times by 2, so it needs H and W divisible by
    ``2**depth``."""
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    state = member(state, 0) if state.members else state  # the members share one shape
    try:
        out = jax.eval_shape(lambda s, x: s.model(x), state, x).shape[1:]
    except (TypeError, ValueError) as e:
        out = f"an error ({str(e).splitlines()[0][:120]})"
    if out != tuple(shape):
        dims = "x".join(map(str, shape))
        got = "x".join(map(str, out)) if isinstance(out, tuple) else out
        depth = getattr(state.model, "depth", None)  # a pooling model's: sides / 2**depth
        why = (
            f"its depth {depth} pools {depth} times by 2, so H and W must be multiples of "
            f"{2**depth}: give --image-size H W of such sides, or a smaller --model depth"
            if depth
            else "give --image-size H W that its layers take, or model options that match the data"
        )
        raise AejaxError(f"this model turns {dims} images into {got}: {why}")


def to_float(images: jax.Array) -> jax.Array:
    """uint8 pixels to float32 in [0, 1] (x / 255, as Keras users scale them); floats pass."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


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
        loss_B, aux = nnx.merge(state.graphdef, params).loss(x, key)
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
        return _over_members(lambda s: _apply_gradients(s, batch, weight_B, count, batch_sharding))(
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


@functools.partial(jax.jit, donate_argnums=0)
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

    Drawn with NumPy from ``key``'s bits: the same on every process, and ~20x faster than
    ``jax.random.permutation``'s sorts on CPU (which cost ~10% of a dense-net epoch).
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


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("batch_sharding",))
def _train_steps(state, images_NxHxWxC, order_CxKxB, c, batch_sharding=None):
    """Steps ``order[c, 0], ..., order[c, K-1]`` in one ``lax.scan``; returns the state and
    the metric sums over those K steps."""
    if batch_sharding is None:  # one device: gather each batch as it is needed (in cache)

        def step(state, idx_B):
            return _apply_gradients(state, *_gather(images_NxHxWxC, idx_B, None))

        state, sums = jax.lax.scan(step, state, order_CxKxB[c])
    else:
        # Several devices: the K batches are gathered up front, one exchange between devices
        # per call instead of one per step (faster on 2 CPU devices: speed.md's notes).
        batches = _gather(images_NxHxWxC, order_CxKxB[c], batch_sharding)
        state, sums = jax.lax.scan(
            lambda state, bw: _apply_gradients(state, *bw, batch_sharding=batch_sharding),
            state,
            batches,
        )
    return state, jax.tree.map(lambda v: jnp.sum(v, axis=0), sums)


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("batch_sharding",))
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
    ~1/min_calls of an epoch, else the whole epoch in one call."""
    for calls in range(min_calls, max_calls + 1):
        if steps % calls == 0:
            return steps // calls
    return steps


@jax.jit
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
    batch_size: int = 256,
    num_examples: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    on_progress: Callable[[int, dict], None] | None = None,
) -> tuple[TrainState, dict]:
    """One shuffled pass over ``images``: on the device(s), or streamed from the host.

    Each batch is gathered by index on the device; the last, ragged batch is trained on, as
    Keras does (padded to a whole batch and masked, so one compiled step serves every batch).
    The steps run inside ``lax.scan``, a few equal chunks of an epoch per call: on XLA:CPU
    that measured 1.3x (dense) to 1.7x (conv) faster than one call per step, whose every call
    allocates its buffers afresh (experiments/results/speed.md).

    Args:
      state: training state (donated).
      images: ``[N, H, W, C]`` uint8 (or float) images on the device(s), possibly sharded
        along N (:mod:`aejax.parallel`); or a NumPy array (a memory-map of a split larger
        than memory: :func:`aejax.data.open_rows`), whose batches are gathered on the host,
        the next chunk while the device trains on this one. Either way the same batches,
        in the same order, train the same steps.
      key: shuffles this epoch.
      batch_size: examples per step (the global batch, over all devices).
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


# What per_image can compute for each image; "code" is the flattened code [N, D].
TERMS = ("bce", "mse", "kl", "entropy", "elbo", "disagreement", "code")


def per_image(
    state: TrainState,
    images: jax.Array | np.ndarray,
    terms: tuple[str, ...] = TERMS,
    batch_size: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    each_member: bool = False,
) -> dict[str, jax.Array]:
    r"""The one per-image evaluator: ``{term: [N, ...]}`` for each of ``terms`` (of TERMS).

    ``bce`` and ``mse``: reconstruction errors (:mod:`aejax.losses`); ``entropy``: the image's
    own mean binary entropy; ``kl``: ``bce - entropy``; ``elbo``: ``bce`` plus the model's
    ``prior_term``; ``disagreement``: an ensemble's per-pixel variance of its members'
    reconstructions, averaged over the pixels (0 for one model); ``code``: the flattened
    code. Every score, ``eval_loss`` and the evaluation report derive from it. Runs
    ``batch_size`` images at a time (default: the model's ``eval_batch_size``; see
    :func:`batched`), so device memory stays bounded whatever N; with ``batch_sharding``,
    each batch is split over the devices. Terms not asked for are not computed (XLA drops
    them). A NumPy array larger than :data:`HOST_CHUNK_ROWS` (a memory-mapped split) is sent
    to the device in chunks. ``each_member``: an ensemble's terms member by member,
    ``[N, K, ...]``, instead of combined.
    """
    if isinstance(images, np.ndarray) and len(images) > HOST_CHUNK_ROWS:
        parts = [
            _per_image(
                state,
                images[i : i + HOST_CHUNK_ROWS],
                terms,
                batch_size,
                batch_sharding,
                each_member,
            )  # fmt: skip
            for i in range(0, len(images), HOST_CHUNK_ROWS)
        ]
        return {k: jnp.concatenate([p[k] for p in parts]) for k in terms}
    return _per_image(state, images, terms, batch_size, batch_sharding, each_member)


HOST_CHUNK_ROWS = 50_000  # what per_image sends to the device at once from host memory


@functools.partial(
    jax.jit, static_argnames=("terms", "batch_size", "batch_sharding", "each_member")
)
def _per_image(
    state: TrainState,
    images: jax.Array,
    terms: tuple[str, ...] = TERMS,
    batch_size: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    each_member: bool = False,
) -> dict[str, jax.Array]:
    """See :func:`per_image`."""
    unknown = set(terms) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown terms {sorted(unknown)}; choose from {TERMS}")
    return batched(
        terms_of(state, terms, each_member),
        images,
        batch_size or state.model.eval_batch_size,  # a class attribute: any member's
        batch_sharding,
    )


def terms_of(
    state: TrainState, terms: tuple[str, ...] = TERMS, each_member: bool = False
) -> Callable[[jax.Array], dict]:
    """``images -> {term: [B, ...]}``, :func:`image_terms` of the state's model; for an
    ensemble, of every member, then combined: errors averaged over the members (each term is
    a per-image mean, so the ensemble's is the mean of the members'), codes side by side,
    and the members' ``disagreement``. With ``each_member``, an ensemble's terms are
    ``[B, K, ...]``, one per member, not combined."""
    if not state.members:
        model = state.model
        return lambda x_uint8: image_terms(model, x_uint8, terms)

    def combined(x_uint8):
        def one(params):
            return _terms_and_logits(nnx.merge(state.graphdef, params), x_uint8, terms)

        # One vmapped pass over the members, all reading the same batch.
        each, logits_KxBx_ = jax.vmap(one)(state.params)  # {term: [K, B, ...]}
        if each_member:
            return {k: jnp.moveaxis(v, 0, 1) for k, v in each.items()}
        out = {k: jnp.mean(v, axis=0) for k, v in each.items() if k != "code"}
        if "code" in each:  # [K, B, D] -> [B, K * D]
            out["code"] = jnp.moveaxis(each["code"], 0, 1).reshape(x_uint8.shape[0], -1)
        if "disagreement" in terms:
            p_KxBxP = jax.nn.sigmoid(logits_KxBx_.astype(jnp.float32))
            p_KxBxP = p_KxBxP.reshape(*p_KxBxP.shape[:2], -1)
            out["disagreement"] = jnp.mean(jnp.var(p_KxBxP, axis=0), axis=1)
        return {name: out[name] for name in terms}

    return combined


def image_terms(
    model: models.Autoencoder, images_BxHxWxC: jax.Array, terms: tuple[str, ...] = TERMS
) -> dict[str, jax.Array]:
    """:func:`per_image`'s terms of one batch of uint8 images, all at once (traceable, and
    shape-polymorphic in the batch: the exported detector runs this)."""
    return _terms_and_logits(model, images_BxHxWxC, terms)[0]


def _terms_and_logits(model, images_BxHxWxC, terms):
    x = to_float(images_BxHxWxC)
    code = model.encode(x)
    logits = model.decode(code)
    bce = losses.bce_per_example(logits, x)
    entropy = losses.entropy_per_example(images_BxHxWxC)
    every = {
        "bce": bce,
        "mse": losses.mse_per_example(logits, x),
        "kl": bce - entropy,
        "entropy": entropy,
        "elbo": bce + model.prior_term(x),
        "disagreement": jnp.zeros_like(bce),  # one model agrees with itself
        "code": code.reshape(x.shape[0], -1),
    }
    return {name: every[name] for name in terms}, logits


def score(
    state: TrainState,
    images: jax.Array,
    kind: str = "bce",
    batch_size: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> jax.Array:
    """Per-image reconstruction error ``[N]``: :func:`per_image`'s ``kind`` (``bce``,
    ``mse``, ...)."""
    return per_image(state, images, (kind,), batch_size, batch_sharding)[kind]


def batched(
    fn,
    images_NxHxWxC: jax.Array,
    batch_size: int,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> jax.Array:
    """``fn`` over ``images`` in batches of ``batch_size`` (zero-padded tail, cut off again).

    Like big_vision's evaluators: fixed-size batches, so one compiled function serves any N,
    and per-example outputs, so padding never leaks into a mean. ``batch_size`` is an upper
    bound: the batches are evened out, which usually leaves nothing to pad.
    """
    n = images_NxHxWxC.shape[0]
    # As many batches as batch_size asks for, of equal size: 10,000 images in batches of at
    # most 2048 go as 5 x 2000, needing no padding (whose copy of every image is a
    # measurable part of a small net's evaluation).
    batch_size = math.ceil(n / math.ceil(n / batch_size))
    if batch_sharding is not None:  # every batch must split evenly over the devices
        devices = len(batch_sharding.device_set)
        batch_size = math.ceil(batch_size / devices) * devices
    steps = math.ceil(n / batch_size)
    padded = jnp.pad(images_NxHxWxC, [(0, steps * batch_size - n)] + [(0, 0)] * 3)
    batches = padded.reshape(steps, batch_size, *images_NxHxWxC.shape[1:])
    if batch_sharding is not None:
        spec = jax.sharding.PartitionSpec(None, *batch_sharding.spec)
        batches = jax.lax.with_sharding_constraint(
            batches, jax.sharding.NamedSharding(batch_sharding.mesh, spec)
        )
    out = jax.lax.map(fn, batches)  # any pytree of per-example arrays
    return jax.tree.map(lambda v: v.reshape(steps * batch_size, *v.shape[2:])[:n], out)


def eval_loss(
    state: TrainState,
    images: jax.Array,
    batch_size: int | None = None,
    num_examples: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    each_member: bool = False,
) -> jax.Array:
    """Mean reconstruction BCE over the first ``num_examples`` (default all) ``images``
    (Keras' ``val_loss`` for these models); with ``each_member``, an ensemble's ``[K]``, one
    per member, from one vmapped pass."""
    bce = per_image(state, images, ("bce",), batch_size, batch_sharding, each_member)["bce"]
    return _mean_of_first(bce, num_examples)


@xla.quick_jit(static_argnums=1)
def _mean_of_first(values_NxK, n: int | None):
    # Jitted: eagerly the slice and the mean were programs of their own to compile.
    return jnp.mean(values_NxK[:n], axis=0)


@jax.jit
def reconstruct(state: TrainState, images: jax.Array) -> jax.Array:
    """Reconstructed images, float32 in [0, 1], same shape as ``images``; an ensemble's is
    the mean of its members'."""
    one = _over_members(lambda s: jax.nn.sigmoid(s.model(to_float(images))))(state)
    return jnp.mean(one, axis=0) if state.members else one


@jax.jit
def encode(state: TrainState, images: jax.Array) -> jax.Array:
    """The codes of ``images`` (``[B, latent]`` for dense, ``[B, 7, 7, latent]`` for conv)."""
    return state.model.encode(to_float(images))


@jax.jit
def decode(state: TrainState, codes: jax.Array) -> jax.Array:
    """Images, float32 in [0, 1], decoded from ``codes``."""
    return jax.nn.sigmoid(state.model.decode(codes))


def param_count(state: TrainState) -> int:
    return sum(x.size for x in jax.tree.leaves(state.params))

"""The training state and its ensembles: what every function of the core takes and returns.

The model is split once (``nnx.split``) into a static ``graphdef`` and a ``params`` pytree;
every hot-path function is a plain ``jax.jit`` over the state and merges the model back only
inside the trace.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from aejax import backend, models, xla
from aejax.errors import AejaxError
from aejax.models import base

# The core runs the models: their layers by the backend (aejax.backend), chosen per platform.
base.use_layer_runner(backend.apply)


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (what Orbax checkpoints).

    ``rng`` is raw ``uint32[2]`` key data rather than a typed key so that it checkpoints as a
    plain array; the key for step ``t`` is ``fold_in(rng, t)``, so a resumed run draws the same
    randomness as an uninterrupted one.

    Attributes:
      params: the model's parameters (``nnx.split``'s state), float32.
      opt_state: the optimizer's state.
      step: optimizer steps taken, int32.
      rng: the training randomness' key data.
      graphdef: the model's static structure (merged with ``params`` inside a trace).
      tx: the optax transformation (static).
      compute_dtype: what the training pass computes in (static).
      mutation_rate: a background model's mutation rate, 0 for a normal model (static).
      members: an ensemble's size, 0 for a single model (static).
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
    """Adam at learning rate ``lr`` with Keras' defaults (``eps=1e-7``, not optax's 1e-8),
    as the reference used.

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
    transform_head: bool = False,
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
      transform_head: add a self-supervised head that learns which transformation was
        applied to the input, trained jointly (:mod:`aejax.models.heads`).
      **model_options: the model's options, e.g. ``latent_dim=32``.
    """
    frozen = tuple(sorted((k, _hashable(v)) for k, v in model_options.items()))
    return _init_state(
        key, arch, tx or adam(lr), compute_dtype, mutation_rate, transform_head, frozen
    )


def _hashable(value):
    """An option as a static argument of ``jit``: lists (JSON's tuples) as tuples."""
    return tuple(map(_hashable, value)) if isinstance(value, list | tuple) else value


# One compiled program, compiled for speed of compiling: flax's eager initialisation
# dispatches each operation as its own XLA program, and a first run waited for every one
# to compile (experiments/results/speed.md); these arrays are computed once per run.
@xla.quick_jit(static_argnums=(1, 2, 3, 4, 5, 6))
def _init_state(
    key, arch, tx, compute_dtype, mutation_rate, transform_head, model_options
) -> TrainState:
    init_key, train_key = jax.random.split(key)
    rngs = nnx.Rngs(params=init_key)
    model = models.create(arch, rngs=rngs, transform_head=transform_head, **dict(model_options))
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
    # init compiles every batched op anew, and jitted, XLA takes seconds to compile the
    # batched random draws. init_state's program, once compiled, is reused.
    each = [init_state(arch, keys_K[i], **options) for i in range(len(keys_K))]
    state = jax.tree.map(lambda *v: jnp.stack(v), *each)
    return state.replace(members=len(keys_K))


def member(state: TrainState, i: int) -> TrainState:
    """Member ``i`` of an ensemble, as a single model's state."""
    return jax.tree.map(lambda v: v[i], state.replace(members=0))


def over_members(fn: Callable) -> Callable:
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


def check_image_shape(state: TrainState, shape: tuple[int, ...]) -> None:
    """One clear error unless the ``state``'s model reconstructs ``shape`` (``H, W, C``) images as
    ``shape``: e.g. ``conv`` pools ``depth`` times by 2, so it needs H and W divisible by
    ``2**depth``."""
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    state = member(state, 0) if state.members else state  # the members share one shape
    try:
        out = jax.eval_shape(lambda s, x: s.model(x), state, x).shape[1:]
    # ArithmeticError: a pooling that leaves a side of 0 divides by it (depth 6 at 28x28).
    except (TypeError, ValueError, ArithmeticError) as e:
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


def param_count(state: TrainState) -> int:
    """How many parameters the ``state``'s model has (all members of an ensemble)."""
    return sum(x.size for x in jax.tree.leaves(state.params))

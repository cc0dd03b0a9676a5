"""A run's state from its config: the keys its seed gives, its fresh state, its shape."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from aejax import core, xla
from aejax.config import RunConfig
from aejax.parallel import Placement


def fresh_state(config: RunConfig) -> core.TrainState:
    """``config``'s untrained state: initialised from ``split(key(seed))[0]``; with
    ``ensemble K``, member ``i`` as a single run with seed ``seed + i`` would be."""
    options = dict(lr=config.lr, compute_dtype=config.compute_dtype,
                   mutation_rate=config.mutation_rate, transform_head=config.transform_head,
                   **config.model)  # fmt: skip
    if not config.ensemble:
        return core.init_state(config.arch, init_key(config.seed), **options)
    keys = jax.vmap(init_key)(jax.numpy.arange(config.ensemble, dtype="uint32") + config.seed)
    return core.init_ensemble(config.arch, keys, **options)


def init_key(seed) -> jax.Array:
    """The key a run with ``seed`` (0 <= seed < 2**32) initialises its model from (the other
    half of the seed's split shuffles the data)."""
    return _keys(_uint32(seed), 0)[0]


def epoch_key(seed, epoch: int) -> jax.Array:
    """The key that shuffles epoch ``epoch`` (1, 2, ...) of a run with ``seed``."""
    return _keys(_uint32(seed), epoch)[1]


def _uint32(seed):
    # NumPy's conversion: jnp.asarray(seed, uint32) of a Python int is a program to compile.
    return seed if isinstance(seed, jax.Array) else np.uint32(seed)


# A run's keys from one small jitted program (xla.quick_jit): eagerly, the seed, the split,
# taking its halves and the fold were six programs to compile on a first run. The seed as
# uint32 (the CLI's range): key(seed) as from the Python int.
@xla.quick_jit
def _keys(seed_u32: jax.Array, epoch) -> tuple[jax.Array, jax.Array]:
    init, shuffle = jax.random.split(jax.random.key(seed_u32))
    return init, jax.random.fold_in(shuffle, epoch)


def abstract_state(config: RunConfig, placement: Placement | None = None) -> Any:
    """The shapes and dtypes (and, with a placement, replicated shardings) of ``config``'s
    TrainState, without computing it."""
    shapes = jax.eval_shape(lambda: fresh_state(config))
    # Without a placement: one device, whatever devices saved it (a checkpoint keeps its
    # writer's shardings).
    sharding = (
        placement.replicated
        if placement is not None
        else jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    )
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

"""The training core: pure functions of a :class:`TrainState`, jitted, importable.

=================  ==============================================================
:mod:`.state`      the state, its initialisation and ensembles
:mod:`.steps`      one training step; an epoch on the device(s) or streamed
:mod:`.evaluator`  the one per-image evaluator; reconstruct, encode, decode
=================  ==============================================================

Images stay uint8 on the device and become float per batch.

>>> import jax
>>> from aejax import core, data
>>> images, _ = data.load("mnist", "test")
>>> state = core.init_state("dense", jax.random.key(0))
>>> state, metrics = core.train_epoch(state, jax.device_put(images), jax.random.key(1))
>>> float(core.eval_loss(state, images)) < 0.4  # from log 2 = 0.693 before the epoch
True
"""

from aejax.core.evaluator import (
    TERMS,
    batched,
    chunk_rows,
    chunk_size,
    decode,
    encode,
    eval_loss,
    eval_rows,
    image_terms,
    padded,
    per_image,
    reconstruct,
    score,
    terms_of,
    to_float,
)
from aejax.core.state import (
    TrainState,
    adam,
    check_image_shape,
    init_ensemble,
    init_state,
    member,
    over_members,
    param_count,
)
from aejax.core.steps import epoch_order, mutated, steps_per_call, train_epoch, train_step

__all__ = [
    "TERMS", "TrainState", "adam", "batched", "check_image_shape", "chunk_rows", "chunk_size",
    "decode", "encode", "epoch_order", "eval_loss", "eval_rows", "image_terms", "init_ensemble",
    "init_state", "member", "mutated", "over_members", "padded", "param_count", "per_image",
    "reconstruct", "score",
    "steps_per_call", "terms_of", "to_float", "train_epoch", "train_step",
]  # fmt: skip

"""aejax: image autoencoders in JAX/Flax NNX, and out-of-distribution detection with them.

The training core is pure and jitted::

    import jax
    from aejax import data, init_state, train_epoch, eval_loss

    images, _ = data.load("mnist", "train")
    state = init_state("dense", jax.random.key(0))
    state, metrics = train_epoch(state, jax.device_put(images), jax.random.key(1))

The commands (``python -m aejax.train``, ``eval``, ``score``, ``export``, ``data``) each parse
their options and call one library function: :func:`aejax.train.train_and_evaluate`,
:func:`aejax.eval.evaluate`, :class:`aejax.Detector`, :mod:`aejax.export`,
:func:`aejax.data.source`. The per-image terms are :func:`aejax.core.per_image`'s, the OOD
scores :mod:`aejax.ood`'s.

Names are imported on first use (PEP 562), so ``import aejax.data`` does not load JAX, and
nothing here starts a JAX backend before the CLIs have chosen the devices. Importing aejax
changes no process-wide setting (environment variables, JAX's configuration, Python's hooks):
the commands set their XLA:CPU speed flags themselves (:mod:`aejax.xla`), and the library
computes the same numbers without them (tests/test_api.py).
"""

import importlib

_EXPORTS = {
    "TrainState": "aejax.core",
    "init_state": "aejax.core",
    "train_step": "aejax.core",
    "train_epoch": "aejax.core",
    "eval_loss": "aejax.core",
    "reconstruct": "aejax.core",
    "encode": "aejax.core",
    "decode": "aejax.core",
    "Detector": "aejax.detector",
    "AutoencoderDetector": "aejax.estimator",
    "per_image": "aejax.core",
    "ood_metrics": "aejax.metrics",
    "restore": "aejax.run",
    "RunConfig": "aejax.config",
    "train_and_evaluate": "aejax.train",
    "EvalConfig": "aejax.eval",
    "evaluate": "aejax.eval",
    "AejaxError": "aejax.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'aejax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

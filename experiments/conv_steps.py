"""A conv net's training steps, timed: the one timing loop of the experiments that time them.

    python experiments/conv_steps.py '{"shape": [128, 28, 28, 1], "steps": 30}'
    python experiments/conv_steps.py '{"shape": [128, 32, 32, 3], "steps": 15,
                                       "init": {"depth": 2, "width": 32}}'

prints one JSON line: each step's wall seconds (after one step that compiles) and the last
loss. Random uint8 images (seed 0), ``core.init_state("conv", key(0), channels=C, **init)``.
A script for the experiments that time it in a fresh process (other XLA flags, another
``AEJAX_BACKEND``); :func:`random_images` and :func:`timed_steps` for those that time it in
their own.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np

from aejax import core, xla

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)


def random_images(shape) -> jax.Array:
    """Random uint8 images ``[B, H, W, C]`` (seed 0) on the default device."""
    return jax.device_put(np.random.default_rng(0).integers(0, 256, shape, np.uint8))


def timed_steps(state, images, steps: int):
    """``steps`` training steps on ``images``, each waited for: the state, each step's wall
    seconds and the last step's metrics."""
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = core.train_step(state, images)
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - start)
    return state, seconds, metrics


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    shape = spec["shape"]
    state = core.init_state("conv", jax.random.key(0), channels=shape[-1], **spec.get("init", {}))
    images = random_images(shape)
    state, _, _ = timed_steps(state, images, 1)  # compiles
    _, seconds, metrics = timed_steps(state, images, spec["steps"])
    print(json.dumps({"times": seconds, "loss": float(metrics["loss"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

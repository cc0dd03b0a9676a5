"""How a model's ``nnx.Sequential`` layers are executed: as written, or by the CPU backend.

A model is defined once, in flax's ordinary layers (:mod:`aejax.models`); its parameters and
checkpoints are the same whichever way it runs. :func:`apply` picks the execution:

* ``"auto"`` (default): :mod:`aejax.backend.cpu` where XLA compiles for CPU, the layers
  themselves elsewhere (cuDNN, TPU convolutions), chosen by ``jax.lax.platform_dependent``
  when the computation is lowered, not by the host's backend when it is traced;
* ``"plain"``: the layers themselves on every platform;
* ``"cpu"``: the CPU backend on every platform (it is plain JAX, so it runs anywhere).

The choice is read when a function is traced, so set it before the first call: from the
environment (``AEJAX_BACKEND=plain``) or with :func:`use`::

    with aejax.backend.use("plain"):
        logits = model(x)
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import jax
from flax import nnx

from aejax.errors import AejaxError

CHOICES = ("auto", "plain", "cpu")
_choice: list[str] = [os.environ.get("AEJAX_BACKEND", "auto")]


def current() -> str:
    if _choice[-1] not in CHOICES:
        raise AejaxError(f"AEJAX_BACKEND={_choice[-1]!r}: choose one of {', '.join(CHOICES)}")
    return _choice[-1]


@contextlib.contextmanager
def use(choice: str) -> Iterator[None]:
    """Within the block, :func:`apply` executes layers as ``choice`` says (one of CHOICES)."""
    _choice.append(choice)
    try:
        current()
        yield
    finally:
        _choice.pop()


def apply(layers: nnx.Module, x: jax.Array) -> jax.Array:
    """``layers(x)``, executed by the backend in use (an ``nnx.Sequential`` only: any other
    module runs as written)."""
    choice = current()
    if choice == "plain" or not isinstance(layers, nnx.Sequential):
        return layers(x)
    from aejax.backend import cpu  # its kernels are only traced when used

    fast = functools.partial(cpu.forward, list(layers.layers))
    if choice == "cpu":
        return fast(x)
    return jax.lax.platform_dependent(x, cpu=fast, default=layers)

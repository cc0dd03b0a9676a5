"""The model registry: ``--arch NAME`` -> an :class:`Autoencoder` class.

A new architecture is one small module in this package that decorates its class with
``@register("name")``; every module here is imported on first use of the registry.
"""

import importlib
import inspect
import pkgutil
from collections.abc import Callable

from flax import nnx

from aejax.errors import AejaxError
from aejax.models.base import Autoencoder

_REGISTRY: dict[str, type[Autoencoder]] = {}


def register(name: str) -> Callable[[type[Autoencoder]], type[Autoencoder]]:
    def add(cls: type[Autoencoder]) -> type[Autoencoder]:
        _REGISTRY[name] = cls
        return cls

    return add


def _discover() -> dict[str, type[Autoencoder]]:
    if not _REGISTRY:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
    return _REGISTRY


def names() -> list[str]:
    return sorted(_discover())


def options(arch: str) -> dict:
    """The keyword options ``arch`` takes, with their defaults (``latent_dim``, ...)."""
    signature = inspect.signature(get(arch).__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind == p.POSITIONAL_OR_KEYWORD and p.name != "self"
    }


def get(arch: str) -> type[Autoencoder]:
    try:
        return _discover()[arch]
    except KeyError:
        raise AejaxError(f"unknown --arch {arch!r}; choose one of {', '.join(names())}") from None


def create(arch: str, *, rngs: nnx.Rngs, **opts) -> Autoencoder:
    """An initialised ``arch`` model; ``opts`` override its defaults (see :func:`options`)."""
    unknown = set(opts) - set(options(arch))
    if unknown:
        raise AejaxError(
            f"--arch {arch} takes no option(s) {', '.join(sorted(unknown))}; "
            f"its options: {', '.join(options(arch))}"
        )
    return get(arch)(**opts, rngs=rngs)

"""The model registry: ``--arch NAME`` -> an :class:`Autoencoder` class.

A new architecture is one small module in this package that decorates its class with
``@register("name")``; every module here is imported on first use of the registry.
"""

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable

from flax import nnx

from aejax.errors import AejaxError
from aejax.models import heads
from aejax.models.base import Autoencoder
from aejax.models.options import Option, Range

__all__ = [
    "Autoencoder", "Option", "Range", "check_options", "create", "declared", "defaults",
    "describe_options", "get", "names", "register",
]  # fmt: skip

_REGISTRY: dict[str, type[Autoencoder]] = {}


def register(name: str) -> Callable[[type[Autoencoder]], type[Autoencoder]]:
    """A class decorator: the :class:`Autoencoder` subclass is architecture ``name``
    (``--arch name``, :func:`get`)."""

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
    """Every registered architecture's name, sorted."""
    return sorted(_discover())


def declared(arch: str) -> dict[str, Option]:
    """The options ``arch`` takes, as its ``__init__`` declares them: each one's kind,
    default and range (:mod:`aejax.models.options`)."""
    cls = get(arch)
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    out = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind != p.POSITIONAL_OR_KEYWORD or p.name == "self":
            continue
        hint = hints.get(p.name)
        ranges = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Range)]
        if not ranges:
            raise TypeError(f"{cls.__name__}'s option {p.name} has no declared range")
        kind = typing.get_origin(hint.__origin__) or hint.__origin__
        out[p.name] = Option(p.name, kind, p.default, ranges[0])
    return out


def defaults(arch: str) -> dict:
    """The keyword options ``arch`` takes, with their defaults (``latent_dim``, ...)."""
    return {name: option.default for name, option in declared(arch).items()}


def check_options(arch: str, given: dict) -> dict:
    """``given`` model options checked against ``arch``'s declarations (:func:`declared`):
    as the model takes them, or one error naming the option and what it takes."""
    options_of = declared(arch)
    unknown = set(given) - set(options_of)
    if unknown:
        raise AejaxError(
            f"--arch {arch} takes no option(s) {', '.join(sorted(unknown))}; "
            f"its options: {', '.join(options_of)}"
        )
    return {name: options_of[name].check(value, arch) for name, value in given.items()}


def describe_options() -> str:
    """Every architecture's options, a line each (what ``--help`` lists)."""
    return "\n".join(
        f"  {arch}: "
        + ", ".join(
            f"{o.name}={o.default_text()} ({o.describe()})" for o in declared(arch).values()
        )
        for arch in names()
    )


def get(arch: str) -> type[Autoencoder]:
    """The class registered as ``arch``; one error naming the choices if none is."""
    try:
        return _discover()[arch]
    except KeyError:
        raise AejaxError(f"unknown --arch {arch!r}; choose one of {', '.join(names())}") from None


def create(arch: str, *, rngs: nnx.Rngs, transform_head: bool = False, **opts) -> Autoencoder:
    """An initialised ``arch`` model, its parameters drawn from ``rngs``; ``opts`` override
    its defaults (see :func:`declared`).
    ``transform_head``: with a self-supervised head on its code
    (:class:`aejax.models.heads.TransformHead`, initialised after the model, so the model's
    own parameters are those of a model without it)."""
    options = check_options(arch, opts)
    model = get(arch)(**options, rngs=rngs)
    if transform_head:
        latent_dim = {**defaults(arch), **options}["latent_dim"]
        model.transform_head = heads.TransformHead(latent_dim, model.spatial_code, rngs=rngs)
    return model

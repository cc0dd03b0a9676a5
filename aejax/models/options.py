"""What a model's options are: declared once, in the type annotations of its ``__init__``.

::

    def __init__(self, latent_dim: PositiveInt = 15, noise: NonNegative = 0.5, *, rngs): ...

:func:`aejax.models.declared` reads them; ``--model NAME=VALUE`` is checked against them
(:meth:`Option.check`), and ``python -m aejax.train --help`` lists them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Annotated

from aejax.errors import AejaxError


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric option allows: ``[low, high]``, None unbounded."""

    low: float | None = None
    high: float | None = None


PositiveInt = Annotated[int, Range(1)]
NonNegative = Annotated[float, Range(0)]
Shape = Annotated[tuple[int, int, int], Range(1)]  # (H, W, C): three positive integers


@dataclasses.dataclass(frozen=True)
class Option:
    """One model option: its name, kind (``int``, ``float`` or ``tuple``: a shape of ints),
    default and range."""

    name: str
    kind: type
    default: object
    range: Range

    def describe(self) -> str:
        """E.g. ``an int >= 1``, ``a float >= 0``, ``3 ints >= 1``."""
        low, high = self.range.low, self.range.high
        kind = {int: "an int", float: "a float"}.get(self.kind) or f"{len(self.default)} ints"
        if low is not None and high is not None:
            return f"{kind} in [{low:g}, {high:g}]"
        if low is not None:
            return f"{kind} >= {low:g}"
        return kind if high is None else f"{kind} <= {high:g}"

    def check(self, value, arch: str) -> object:
        """``value`` as this option takes it (an int for a float option becomes a float), or
        one error that names the option (of architecture ``arch``), what it takes and what it
        was given.

        >>> Option("depth", int, 2, Range(1)).check(3, "conv")
        3
        >>> Option("depth", int, 2, Range(1)).check(0, "conv")
        Traceback (most recent call last):
        aejax.errors.AejaxError: --model depth=0: conv's depth is an int >= 1 (default 2)
        """
        if self.kind is tuple:
            items = value if isinstance(value, list | tuple) else None
            if items is not None and len(items) == len(self.default):
                if all(self._number(v, int) is not None for v in items):
                    return [self._number(v, int) for v in items]
        else:
            number = self._number(value, self.kind)
            if number is not None:
                return number
        shown = json.dumps(value) if isinstance(value, list | tuple) else value
        raise AejaxError(
            f"--model {self.name}={shown}: {arch}'s {self.name} is {self.describe()} "
            f"(default {self.default_text()})"
        )

    def default_text(self) -> str:
        if isinstance(self.default, list | tuple):
            return "[" + ", ".join(map(str, self.default)) + "]"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def _number(self, value, kind: type):
        """``value`` as a ``kind`` number in range, else None (bools and text are not
        numbers; a float option takes an int)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if kind is int and not isinstance(value, int):
            return None
        value = kind(value)
        low, high = self.range.low, self.range.high
        if not math.isfinite(value) or (low is not None and value < low):
            return None
        if high is not None and value > high:
            return None
        return value

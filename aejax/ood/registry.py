"""The registry of OOD scores: what each score needs, fits and computes.

A score is registered once (:func:`register`), in the order it is computed: a score may need
the per-image terms of :func:`aejax.core.per_image` and any score registered before it.
Everything that uses scores (``aejax.eval``'s report, ``aejax.score``'s CSV, the exported
detector, :class:`aejax.Detector`) takes them from here, by :func:`names`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aejax.core.evaluator import TERMS


@dataclasses.dataclass(frozen=True)
class Score:
    """One OOD score (higher: more anomalous).

    ``compute(fitted, inputs)``: the score ``[N]`` (float32, traceable) from its fitted
    arrays and ``{need: [N, ...]}``. ``fit(train, held_out)``: its fitted arrays, from the
    training images' terms (``train``: the terms among its needs) and the held-out images'
    values of its needs (``held_out``: terms and earlier scores); entries named ``_x`` are
    notes for the report (``<score>_x`` in the statistics' meta), not arrays. ``reported``:
    False for a part of other scores that is no score of its own (a signed typicality).
    ``cross_fitted``: the score is fitted on the held-out images' values themselves, where
    their own scores would come out too typical; their scores (which the threshold and the
    p-values are set on) are then cross-fitted, each fold's from a fit to the other folds.
    """

    name: str
    needs: tuple[str, ...]
    compute: Callable[[dict, dict], object]
    fit: Callable[[dict, dict], dict] | None = None
    reported: bool = True
    cross_fitted: bool = False


_SCORES: dict[str, Score] = {}


def register(score: Score) -> Score:
    """Adds ``score`` after every score registered so far."""
    if score.name in _SCORES:
        raise ValueError(f"an OOD score named {score.name!r} is registered already")
    unknown = [n for n in score.needs if n not in TERMS and n not in _SCORES]
    if unknown:
        raise ValueError(f"{score.name} needs {unknown}: neither terms nor registered scores")
    _SCORES[score.name] = score
    return score


def unregister(name: str) -> None:
    """Removes the score ``name`` (one a test or a notebook registered) and those that need
    it."""
    _SCORES.pop(name)
    for other in [s for s in _SCORES.values() if name in s.needs]:
        unregister(other.name)


def registered() -> list[Score]:
    """Every score, in the order they are computed."""
    return list(_SCORES.values())


def needed_by(name: str) -> tuple[list[Score], tuple[str, ...]]:
    """What computing score ``name`` takes: the scores it needs, itself last, in the order
    they are computed, and the terms (of :data:`~aejax.core.evaluator.TERMS`) they read."""
    wanted, stack = set(), [name]
    while stack:
        score = _SCORES[stack.pop()]
        if score.name not in wanted:
            wanted.add(score.name)
            stack += [n for n in score.needs if n in _SCORES]
    scores = [s for s in _SCORES.values() if s.name in wanted]
    terms = {n for s in scores for n in s.needs if n in TERMS}
    return scores, tuple(t for t in TERMS if t in terms)


def names() -> tuple[str, ...]:
    """The scores a report, a CSV and a detector give, in order."""
    return tuple(s.name for s in _SCORES.values() if s.reported)

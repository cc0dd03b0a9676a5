"""How the default OOD score is chosen: by leave-one-family-out (``ood_general.py``).

For each family of OOD sets, the score with the best worst-case AUROC over every *other*
family and every run is chosen, then reported on the left-out family: a choice that never saw
the family it is judged on. tests/test_ood.py checks that a family's numbers cannot change its
own choice.
"""

from __future__ import annotations

import numpy as np


def choose_score(selection: list[dict], families_seen: list[str]) -> str:
    """The score with the best worst-case AUROC over ``families_seen`` and every run in
    ``selection`` (per run ``{score: {family: worst AUROC of its sets}}``); ties go to the
    better mean, then to the name."""
    values = {
        score: [run[score][f] for run in selection for f in families_seen] for score in selection[0]
    }
    return max(sorted(values), key=lambda s: (min(values[s]), float(np.mean(values[s]))))


def choose_without(
    selection: list[dict], families: list[str], left_out: str, never_seen: tuple[str, ...] = ()
) -> str:
    """:func:`choose_score` on a copy of ``selection`` from which family ``left_out``'s
    numbers (and those of the ``never_seen`` families) are removed: a choice that can be
    reported on ``left_out`` because it never saw it."""
    seen = [f for f in families if f != left_out and f not in never_seen]
    blind = [{s: {f: by[f] for f in seen} for s, by in run.items()} for run in selection]
    return choose_score(blind, seen)


def leave_one_family_out(
    selection: list[dict], families: list[str], never_seen: tuple[str, ...] = ()
) -> dict[str, str]:
    """``{family: the score chosen without it}`` (:func:`choose_without`); ``never_seen``
    families are reported but never chosen on."""
    return {f: choose_without(selection, families, f, never_seen) for f in families}

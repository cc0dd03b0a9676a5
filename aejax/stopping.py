r"""When a run on someone's own images stops: early stopping on the held-out slice.

A run on a reference dataset trains the tutorial's 15 epochs. Any other dataset trains until
its held-out loss stops improving, between a floor and a ceiling of optimizer steps, and
keeps its best epoch (:class:`aejax.train.Trainer`). Why counted in steps and not epochs:
"15 epochs" is 3,500 steps on MNIST's 60,000 images and 30 on 300 of one's own.

The loss that is watched is the held-out **KL**, the held-out BCE less the held-out images'
own entropy :math:`\bar H = \frac{1}{n}\sum_i \frac{1}{D}\sum_d H(x_{id})`: the part of the
BCE that training can remove. (A relative change of the BCE itself would be measured against
a floor no model goes below, which on photos is most of it.)

After epoch :math:`e` (:math:`s_e` steps done), with :math:`b` the best epoch so far, where
an epoch counts as better only when its KL is below :math:`(1 - \delta)` times the best's:

.. math::

   \text{stop} \iff s_e \ge S_{\max} \;\lor\;
   \bigl(s_e \ge S_{\min} \;\land\; s_e - s_b \ge \max(P_{\min},\, p\, s_b)\bigr)

The patience grows with the steps it took to get to the best (:math:`p\,s_b`): a run that
still improved after 5,000 steps is given more room than one that stalled after 300. The
constants were chosen by ``experiments/stopping_protocol.py`` on curves of protocol
datasets (held-out losses only, no OOD set), and judged on other data by
``experiments/own_data_defaults.py`` (``docs/own_images.md`` quotes both).

>>> rule = Rule(min_steps=4, max_steps=100, patience=0.5, min_patience_steps=2,
...             min_delta=0.01)
>>> decide([0.5, 0.3, 0.2, 0.2, 0.199, 0.2], steps_per_epoch=1, rule=rule)
Decision(stop=True, best_epoch=3, epochs=6, reason='converged')
"""

from __future__ import annotations

import dataclasses
import math
import os

from aejax.errors import AejaxError


@dataclasses.dataclass(frozen=True)
class Rule:
    """The stopping rule's constants (see the module's docstring for the rule)."""

    min_steps: int = 250  # S_min: no run stops sooner
    max_steps: int = 12_000  # S_max: no run trains longer without being asked
    patience: float = 0.1  # p: the steps without improvement, as a fraction of s_b
    min_patience_steps: int = 1000  # P_min
    min_delta: float = 0.01  # delta: a relative fall of the KL that counts as improving


DEFAULT_RULE = Rule()


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the rule says after some epochs.

    ``stop``: whether to stop now; ``best_epoch``: the epoch to keep (1-based), the last
    that improved on the best before it by ``min_delta``; ``epochs``: the epochs seen;
    ``reason``: ``converged``, ``ceiling`` (the step ceiling) or ``training`` (going on)."""

    stop: bool
    best_epoch: int
    epochs: int
    reason: str


def decide(kl: list[float], steps_per_epoch: int, rule: Rule = DEFAULT_RULE) -> Decision:
    """What the rule says after the epochs whose held-out KL is ``kl`` (oldest first)."""
    best = 0
    for epoch, value in enumerate(kl):
        if value < (1 - rule.min_delta) * kl[best]:
            best = epoch
    epochs = len(kl)
    steps, steps_at_best = epochs * steps_per_epoch, (best + 1) * steps_per_epoch
    waited = steps - steps_at_best
    if steps >= rule.min_steps and waited >= max(rule.min_patience_steps,
                                                  rule.patience * steps_at_best):  # fmt: skip
        return Decision(True, best + 1, epochs, "converged")
    if steps >= rule.max_steps:
        return Decision(True, best + 1, epochs, "ceiling")
    return Decision(False, best + 1, epochs, "training")


def max_steps() -> int:
    """The step ceiling of a new run: :data:`DEFAULT_RULE`'s, or ``$AEJAX_MAX_STEPS`` (a
    quicker first look, a test). A run saves the epochs it comes to in its config, so the
    variable never changes a run that exists."""
    text = os.environ.get("AEJAX_MAX_STEPS")
    if text is None:
        return DEFAULT_RULE.max_steps
    if not text.isdigit() or int(text) < 1:
        raise AejaxError(f"AEJAX_MAX_STEPS={text!r}: give a whole number of steps, 1 or more")
    return int(text)


def ceiling_epochs(steps_per_epoch: int) -> int:
    """The most epochs a new run with this many steps an epoch trains unless told."""
    return math.ceil(max_steps() / steps_per_epoch)


def rule_for(epochs: int, steps_per_epoch: int) -> Rule:
    """:data:`DEFAULT_RULE` for a run whose ceiling is ``epochs`` epochs (its config's): the
    floor never above the ceiling."""
    ceiling = epochs * steps_per_epoch
    return dataclasses.replace(
        DEFAULT_RULE, max_steps=ceiling, min_steps=min(DEFAULT_RULE.min_steps, ceiling)
    )


def trend(kl: list[float], fraction: float = 0.2) -> float | None:
    """How much the held-out KL fell over the last ``fraction`` of the epochs, relative to
    its lowest before them (0.05: it fell 5%); None with fewer than two epochs.

    >>> round(trend([1.0, 0.5, 0.4, 0.3, 0.29]), 3)
    0.033
    """
    if len(kl) < 2:
        return None
    back = max(1, round(fraction * len(kl)))
    then = min(kl[: len(kl) - back])
    return 1 - min(kl[-back:]) / then if then > 0 else 0.0

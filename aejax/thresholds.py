r"""Detection thresholds that say what they mean, and p-values.

An image is flagged as OOD when its score is *strictly above* the threshold. Three ways to
set one:

* ``percentile`` P: the P-th percentile of the held-out in-distribution images' scores
  (:func:`at_percentile`; the default, P = 95).
* ``target-fpr`` F: the lowest held-out score that flags at most a fraction F of
  in-distribution images in expectation (:func:`at_target_fpr`), the split-conformal choice.
* ``contamination`` C: PyOD's idiom, the expected fraction of anomalies in the data being
  scored: its ``100 (1 - C)``-th percentile, so about a fraction C of it is flagged
  (:func:`at_contamination`). It needs the scored data, so it is set where that is known.

What a held-out threshold promises. With :math:`n` held-out scores of which :math:`j` are at
or below the threshold :math:`t`, the in-distribution false-positive rate
:math:`\mathrm{FPR}(t) = P(S > t)` of a new image is at most that of the :math:`j`-th order
statistic, which is :math:`\mathrm{Beta}(n + 1 - j, j)`-distributed for continuous scores.
So :math:`E[\mathrm{FPR}] \le (n + 1 - j)/(n + 1)` (``expected_fpr``), and
:math:`\mathrm{FPR} \le` the Beta's ``confidence`` quantile with probability ``confidence``
over the draw of the held-out images (``fpr_bound``): what the held-out count allows to
promise.

>>> import numpy as np
>>> held_out = np.arange(1, 1001, dtype=np.float32)       # scores 1..1000
>>> t = at_target_fpr(held_out, 0.05, score="bce")
>>> t.value, round(t.expected_fpr, 4), round(t.fpr_bound, 4)
(951.0, 0.05, 0.0618)
>>> np.asarray(p_values(held_out, np.array([0.5, 952.0, 2000.0]))).round(4)
array([1.   , 0.05 , 0.001], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DEFAULT_POLICY", "POLICIES", "Policy", "Threshold", "held_out_needed", "p_values"]

#: How a threshold can be set (:class:`Policy`).
POLICIES = ("percentile", "target-fpr", "contamination")
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A threshold on score ``score`` and how it was set.

    Attributes:
      score: the score it is set on (:func:`aejax.ood.names`).
      value: images scoring above it are flagged; kept as a float32 value, so that float32
        scores compare with it exactly.
      policy: one of :data:`POLICIES`; ``parameter``: its percentile, target FPR or
        contamination.
      n: how many scores it was set on; ``reference``: what they were (``held-out`` images,
        or the ``scored`` data).
      expected_fpr: the expected in-distribution false positive rate (held-out policies);
        ``fpr_bound``: the FPR is at most this with probability ``confidence``.
    """

    score: str
    value: float  # a float32 value, so that float32 scores compare with it exactly
    policy: str  # one of POLICIES
    parameter: float  # the percentile, the target FPR or the contamination
    n: int  # how many scores it was set on
    reference: str = "held-out"  # what those scores were: held-out images, or scored data
    expected_fpr: float | None = None  # E[in-distribution FPR] (held-out policies)
    fpr_bound: float | None = None  # FPR <= this with probability `confidence`
    confidence: float = CONFIDENCE

    def __post_init__(self):
        object.__setattr__(self, "value", float(np.float32(self.value)))

    def as_policy(self) -> Policy:
        """The policy that set this threshold (to set it anew on other scores)."""
        return Policy(self.policy, self.parameter)

    def flags(self, scores) -> np.ndarray:
        """Which of ``scores`` are flagged as OOD (strictly above the threshold)."""
        return np.asarray(scores) > self.value

    def describe(self) -> str:
        """One line saying what the threshold is and what it promises."""
        how = {
            "percentile": f"{self.parameter:g}th percentile of {self.n} {self.reference} scores",
            "target-fpr": f"target FPR {self.parameter:g} on {self.n} {self.reference} scores",
            "contamination": f"contamination {self.parameter:g}: flags the top "
            f"{self.parameter:.1%} of the {self.n} images scored",
        }[self.policy]
        text = f"{self.score} > {self.value:.4g} ({how})"
        if self.expected_fpr is not None:
            text += (
                f"; in-distribution FPR {self.expected_fpr:.1%} expected, "
                f"<= {self.fpr_bound:.1%} with {self.confidence:.0%} confidence"
            )
        return text

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Threshold:
        return cls(**d)


def fpr_promise(held_out, value: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``(expected_fpr, fpr_bound)`` of flagging above ``value``, from the held-out scores
    (see the module's docstring)."""
    from scipy.stats import beta  # a well-kept Beta quantile

    held_out = np.asarray(held_out, np.float64)
    n, j = held_out.size, int(np.sum(held_out <= value))
    if j == 0:
        return 1.0, 1.0
    return (n + 1 - j) / (n + 1), float(beta.ppf(confidence, n + 1 - j, j))


def _checked(held_out) -> np.ndarray:
    held_out = np.asarray(held_out, np.float64).ravel()
    if held_out.size == 0 or not np.isfinite(held_out).all():
        raise ValueError("a threshold needs finite reference scores")
    return held_out


def at_percentile(held_out, percentile: float, *, score: str) -> Threshold:
    """The ``percentile``-th percentile of the held-out scores (linear interpolation)."""
    held_out = _checked(held_out)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile {percentile} is not in [0, 100]")
    value = float(np.float32(np.percentile(held_out, percentile)))  # as Threshold keeps it
    expected, bound = fpr_promise(held_out, value)
    return Threshold(score, value, "percentile", percentile, held_out.size,
                     expected_fpr=expected, fpr_bound=bound)  # fmt: skip


def at_target_fpr(held_out, fpr: float, *, score: str) -> Threshold:
    r"""The :math:`j`-th smallest held-out score, :math:`j = \lceil (n + 1)(1 - F) \rceil`:
    the lowest threshold whose expected FPR :math:`(n + 1 - j)/(n + 1)` is at most ``fpr``.

    Raises ``ValueError`` when ``n`` held-out scores cannot support the target (it needs
    :math:`F \ge 1/(n + 1)`).
    """
    held_out = np.sort(_checked(held_out))
    n = held_out.size
    j = _target_rank(fpr, n)
    value = float(held_out[j - 1])
    expected, bound = fpr_promise(held_out, value)
    return Threshold(score, value, "target-fpr", fpr, n,
                     expected_fpr=expected, fpr_bound=bound)  # fmt: skip


def _target_rank(fpr: float, n: int) -> int:
    """:func:`at_target_fpr`'s :math:`j` for ``n`` held-out scores, or the error saying
    that ``n`` cannot support ``fpr``."""
    if not 0 < fpr < 1:
        raise ValueError(f"target FPR {fpr} is not in (0, 1)")
    j = max(1, math.ceil((n + 1) * (1 - fpr) - 1e-9))  # the epsilon: (n+1)(1-F) is often whole
    if j > n:
        smallest = _round_up(1 / (n + 1))
        need = held_out_needed(fpr)
        raise ValueError(
            f"{n} held-out images cannot set a threshold for FPR {fpr:g}: the smallest target "
            f"they support is {smallest:g}; ask for {smallest:g} or more, or hold out at "
            f"least {need} images (aejax.train --holdout; the estimator's holdout=; by "
            f"default a fifth of the training images is held out, so {5 * need} images give "
            f"{need})"
        )
    return j


def held_out_needed(fpr: float) -> int:
    r"""The fewest held-out images that can set a threshold for target FPR :math:`F`
    (``fpr``, :func:`at_target_fpr`): the least :math:`n` with :math:`(n + 1)(1 - F) \le n`, that is
    :math:`n \ge (1 - F) / F`.

    >>> held_out_needed(0.05), held_out_needed(0.01), held_out_needed(0.001)
    (19, 99, 999)
    """
    return math.ceil((1 - fpr) / fpr - 1e-9)


def _round_up(x: float, digits: int = 2) -> float:
    """``x`` rounded up to ``digits`` significant digits (a bound that still holds).

    >>> _round_up(1 / 55)
    0.019
    """
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale - 1e-9) / scale


def at_contamination(scores, contamination: float, *, score: str) -> Threshold:
    """PyOD's threshold: the ``100 (1 - contamination)``-th percentile of the scores of the
    data being scored, which then flags about a fraction ``contamination`` of it."""
    scores = _checked(scores)
    if not 0 < contamination < 1:
        raise ValueError(f"contamination {contamination} is not in (0, 1)")
    value = float(np.percentile(scores, 100 * (1 - contamination)))
    return Threshold(score, value, "contamination", contamination, scores.size,
                     reference="scored")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a threshold is set: ``percentile`` P of the held-out scores, ``target-fpr`` F on
    them, or ``contamination`` C. Contamination is PyOD's idiom and keeps its two meanings:
    with the scores of the images being scored, their top C is flagged
    (:func:`at_contamination`); without them, C is the fraction of anomalies in the training
    data, and the threshold is the held-out scores' ``100 (1 - C)``-th percentile.

    ``name``: one of :data:`POLICIES`; ``parameter``: its P, F or C.

    >>> Policy("target-fpr", 0.05).threshold([0.1 * i for i in range(100)], score="bce").value
    9.5
    """

    name: str  # one of POLICIES
    parameter: float  # the percentile, the target FPR or the contamination

    def __post_init__(self):
        if self.name not in POLICIES:
            raise ValueError(f"a threshold is set by {', '.join(POLICIES)}, not {self.name!r}")

    def check_supported(self, n: int) -> None:
        """Raises :meth:`threshold`'s ``ValueError`` now, before any score is computed, when
        ``n`` held-out scores cannot support this policy (a target FPR below
        ``1 / (n + 1)``)."""
        if self.name == "target-fpr":
            _target_rank(self.parameter, n)

    def threshold(self, held_out, *, score: str, scored=None) -> Threshold:
        """The threshold on score ``score`` this policy sets from ``held_out``, the held-out
        images' scores (and, for ``contamination``, ``scored``, the scored images' where
        given): the one place a policy becomes a threshold."""
        if self.name == "percentile":
            return at_percentile(held_out, self.parameter, score=score)
        if self.name == "target-fpr":
            return at_target_fpr(held_out, self.parameter, score=score)
        if scored is not None:
            return at_contamination(scored, self.parameter, score=score)
        if not 0 < self.parameter < 1:
            raise ValueError(f"contamination {self.parameter} is not in (0, 1)")
        return at_percentile(held_out, 100 * (1 - self.parameter), score=score)


#: The policy of a run's detector unless told: the held-out scores' 95th percentile.
DEFAULT_POLICY = Policy("percentile", 95.0)


def p_values(held_out_sorted, scores) -> jax.Array:
    r"""Conformal p-values of ``scores``: :math:`p(s) = (1 + \#\{h \ge s\}) / (n + 1)` over
    the held-out scores :math:`h` (``held_out_sorted``, given sorted), the fraction of
    in-distribution images (the new one counted among them) scoring at least as high.
    Never 0; uniform for in-distribution images; flagging :math:`p \le F` is the
    ``target-fpr`` threshold's decision.

    In JAX, float32 (traceable: the exported detector computes it the same way); returns
    ``[N]`` float32."""
    held_out = jnp.asarray(held_out_sorted, jnp.float32)
    at_least = held_out.size - jnp.searchsorted(held_out, jnp.asarray(scores, jnp.float32))
    return (1 + at_least).astype(jnp.float32) / (held_out.size + 1)

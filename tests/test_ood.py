"""The synthetic OOD sets and the leave-one-family-out protocol that chooses scores."""

import numpy as np
import pytest

from aejax import ood
from aejax.ood import synthetic
from tests.helpers import experiments_module

protocol = experiments_module("protocol")


@pytest.mark.parametrize("channels", [1, 3])
def test_every_synthetic_set_is_uint8_in_the_models_shape_and_seeded(channels):
    like = np.random.default_rng(0).integers(0, 256, (20, 32, 24, channels), np.uint8)
    for name in synthetic.SYNTHETIC:
        images = synthetic.synthetic(name, like)
        assert images.dtype == np.uint8 and images.shape[1:] == like.shape[1:], name
        assert len(images) == 20, name
        np.testing.assert_array_equal(images, synthetic.synthetic(name, like), err_msg=name)
    assert {s for names in synthetic.FAMILIES.values() for s in names} == set(synthetic.SYNTHETIC)


def _selection(rng, scores=("a", "b", "c", "d"), families=("f1", "f2", "f3", "f4"), runs=3):
    return [
        {s: {f: float(rng.uniform(0.5, 1)) for f in families} for s in scores} for _ in range(runs)
    ]


def test_choose_score_takes_the_best_worst_case():
    selection = [
        {"a": {"f1": 0.99, "f2": 0.70}, "b": {"f1": 0.90, "f2": 0.85}},
        {"a": {"f1": 0.99, "f2": 0.99}, "b": {"f1": 0.95, "f2": 0.90}},
    ]
    assert protocol.choose_score(selection, ["f1", "f2"]) == "b"
    assert protocol.choose_score(selection, ["f1"]) == "a"


class Poison(float):
    """A number that fails any test that reads it."""

    def __lt__(self, other):
        raise AssertionError("the protocol read the left-out family")

    __gt__ = __le__ = __ge__ = __eq__ = __float__ = __lt__
    __hash__ = float.__hash__


@pytest.mark.parametrize("never_seen", [(), ("transformed",)])
def test_the_left_out_family_is_never_seen(never_seen):
    # The candidates: every registered score (the joint density and the self-supervised
    # head's among them), the ones ood_general.py adds, and those of runs trained with the
    # head (ood_transform_head.py's "<score>@head"); the families: ood_general's seven,
    # "transformed" reported but never chosen on.
    rng = np.random.default_rng(1)
    families = ["noise", "constant", "transformed", "drawn", "photos", "digits", "dataset"]
    scores = [*ood.names(), "complexity", "typ-rss+knn", *(f"{s}@head" for s in ood.names())]
    assert {"joint", "transform", "joint@head", "transform@head"} <= set(scores)
    for _ in range(5):
        selection = _selection(rng, scores=scores, families=families, runs=13)
        chosen = protocol.leave_one_family_out(selection, families, never_seen)
        for left_out in families:
            unread = {left_out, *never_seen}
            # Its numbers changed at random, or made unreadable: the same choice for it.
            changed = [{s: {**by, **{f: float(rng.uniform()) for f in unread}}
                        for s, by in run.items()} for run in selection]  # fmt: skip
            again = protocol.leave_one_family_out(changed, families, never_seen)
            assert again[left_out] == chosen[left_out]
            poisoned = [{s: {**by, **{f: Poison(0.5) for f in unread}} for s, by in run.items()}
                        for run in selection]  # fmt: skip
            assert (
                protocol.choose_without(poisoned, families, left_out, never_seen)
                == (chosen[left_out])
            )


@pytest.mark.parametrize("head_reported, verdict", [(0.7, "does not offer"), (0.99, "offers")])
def test_offering_the_head_is_judged_on_the_families_left_out(head_reported, verdict):
    # ood_transform_head.py runs the protocol with and without the head's runs among the
    # candidates; which way is kept is decided by the test-split AUROC on each left-out
    # family (what each choice never saw), not by the held-out numbers it chose on.
    head_experiment = experiments_module("ood_transform_head")
    families = ["noise", "transformed", "digits"]

    def by_family(auroc_by_score):
        return {s: dict.fromkeys(families, v) for s, v in auroc_by_score.items()}

    def run(arch, head, chosen_on, reported):
        return {"arch": arch, "dataset": "d", "head": head, "constant": [],
                "sets": {f: [f] for f in families}, "selection_family": by_family(chosen_on),
                "report_family": by_family(reported)}  # fmt: skip

    runs = [
        run(arch, head, chosen_on, reported)
        for arch in ("dense", "conv")
        for head, chosen_on, reported in [
            (False, {"joint": 0.9, "knn": 0.8}, {"joint": 0.9, "knn": 0.8}),
            (True, {"joint": 0.85, "transform": 0.95}, {"joint": 0.85, "transform": head_reported}),
        ]
    ]
    result = {"runs": runs, **head_experiment.decide(runs)}
    assert set(result["lofo_choice_without"].values()) == {"joint"}
    assert set(result["lofo_choice"].values()) == {"transform@head"}
    text = "\n".join(head_experiment.decision(result))
    assert f"So the protocol {verdict} the head" in text
    assert "aejax's default today: `transform_head=False`" in text

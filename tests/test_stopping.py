"""How long a run trains by default: the stopping rule on synthetic loss curves, the batch
size and epochs resolved from the data, and an early-stopped run on real files (it keeps its
best epoch, trains no further when run again, and goes on bit-identically when asked)."""

import json
import math

import numpy as np
import pytest

from aejax import config, run, stopping
from aejax.config import RunConfig, resolve
from aejax.stopping import Rule, decide
from aejax.train import __main__ as train_cli

RULE = Rule(min_steps=100, max_steps=10_000, patience=0.25, min_patience_steps=50, min_delta=0.01)


def replay(kl, steps_per_epoch, rule=RULE):
    """The decision the trainer reaches, epoch by epoch, on a whole curve."""
    for epoch in range(1, len(kl) + 1):
        decision = decide(kl[:epoch], steps_per_epoch, rule)
        if decision.stop:
            return decision
    return decision


def power_law(steps, floor=0.0, scale=1.0, rate=0.5):
    """A held-out KL that falls as a power of the steps, to ``floor``."""
    return [floor + scale * (1 + s) ** -rate for s in steps]


def test_a_plateau_stops_after_the_patience_and_keeps_the_best():
    # Falls for 40 epochs of 10 steps, then stays flat (with tiny wiggles).
    kl = [1.0 / e for e in range(1, 41)] + [0.025 * (1 + 0.001 * (-1) ** e) for e in range(60)]
    decision = replay(kl, steps_per_epoch=10)
    assert decision.stop and decision.reason == "converged"
    # The last epoch that improved by 1%: epoch 40 (the wiggles are smaller than that).
    assert decision.best_epoch == 40
    # Patience: max(50, 0.25 * 400 steps) = 100 steps = 10 epochs after the best.
    assert decision.epochs == 50


def test_patience_grows_with_the_steps_to_the_best():
    flat_after = {}
    for best_epoch in (20, 200):
        kl = [1.0 / e for e in range(1, best_epoch + 1)] + [1.0 / best_epoch] * 1000
        decision = replay(kl, steps_per_epoch=10)
        flat_after[best_epoch] = decision.epochs - decision.best_epoch
    assert flat_after[20] == 5  # P_min: 50 steps
    assert flat_after[200] == 50  # 0.25 * 2000 steps


def test_no_run_stops_before_the_floor():
    kl = [0.5] * 30  # never improves after the first epoch
    decision = replay(kl, steps_per_epoch=1)
    assert not decision.stop  # 30 steps: below min_steps
    decision = replay([0.5] * 200, steps_per_epoch=1)
    assert decision.stop and decision.epochs == RULE.min_steps and decision.best_epoch == 1


def test_a_curve_still_falling_stops_at_the_ceiling_with_its_last_epoch():
    steps_per_epoch = 7
    kl = power_law(range(0, 12_000, steps_per_epoch), rate=1.0)  # always 1% better soon
    decision = replay(kl, steps_per_epoch)
    assert decision.stop and decision.reason == "ceiling"
    assert decision.epochs == math.ceil(RULE.max_steps / steps_per_epoch)
    assert decision.best_epoch > decision.epochs - 20
    assert stopping.trend(kl[: decision.epochs]) > 0.01  # the summary warns of it


def test_decisions_depend_only_on_the_epochs_so_far():
    # What makes a resumed run stop where an uninterrupted one does.
    rng = np.random.default_rng(0)
    kl = list(np.exp(-np.arange(300) / 60) + 0.1 + 0.01 * rng.random(300))
    whole = [decide(kl[:e], 5, RULE) for e in range(1, 301)]
    again = [decide(list(kl[:e]), 5, RULE) for e in range(1, 301)]
    assert whole == again
    bests = [d.best_epoch for d in whole]
    assert bests == sorted(bests)  # the best only moves forward


def test_the_data_sets_the_batch_and_the_length_except_on_the_reference_datasets(monkeypatch):
    monkeypatch.delenv("AEJAX_MAX_STEPS", raising=False)  # the tests' own ceiling (conftest)
    reference = resolve(RunConfig(arch="conv", dataset="mnist"), None, (28, 28, 1), 60_000)
    assert (reference.epochs, reference.batch_size, reference.early_stopping) == (15, 128, False)
    own = resolve(RunConfig(arch="conv", dataset="/data/crops"), None, (32, 32, 3), 270)
    assert own.holdout == 54 and own.batch_size == 16 and own.early_stopping
    assert own.epochs == math.ceil(stopping.DEFAULT_RULE.max_steps / math.ceil(216 / 16))
    big = resolve(RunConfig(arch="dense", dataset="/data/crops"), None, (32, 32, 3), 100_000)
    assert big.batch_size == config.MAX_BATCH
    large = resolve(RunConfig(arch="conv", dataset="/data/crops"), None, (512, 512, 3), 3000)
    assert large.batch_size == 8  # 2 megapixels a batch
    given = RunConfig(arch="conv", dataset="/data/crops", epochs=3, batch_size=8)
    given = resolve(given, None, (32, 32, 3), 270)
    assert (given.epochs, given.batch_size, given.early_stopping) == (3, 8, False)
    assert config.data_batch_size("conv", 10) == config.MIN_BATCH


@pytest.mark.slow
def test_an_early_stopped_run_keeps_its_best_and_goes_on_only_when_asked(
    tmp_path, capsys, monkeypatch
):
    rng = np.random.default_rng(0)
    # 60 small grey images of a few blurred blobs: 3 steps an epoch.
    yy, xx = np.mgrid[:12, :12]
    images = np.zeros((60, 12, 12, 1), np.uint8)
    for i in range(60):
        cy, cx = rng.uniform(3, 9, 2)
        images[i, ..., 0] = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6)
    np.save(tmp_path / "blobs.npy", images)
    monkeypatch.setenv("AEJAX_MAX_STEPS", "600")  # the tests' is 300
    workdir = tmp_path / "run"
    common = ["--dataset", str(tmp_path / "blobs.npy"), "--workdir", str(workdir)]
    assert train_cli.main([*common, "--checkpoint-every", "0"]) == 0
    out = capsys.readouterr()
    assert "until the held-out loss stops improving" in out.err
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    record = history[-1]["stopped"]
    best, last = record["best_epoch"], len(history)
    assert record["reason"] in ("converged", "ceiling") and best <= last
    summary = out.out.strip().splitlines()[-1]
    assert f"{last} epochs ({history[-1]['steps']:,} steps of 16)" in summary
    if record["reason"] == "converged":
        assert f"converged: held-out loss stopped improving after epoch {best}" in summary
    # The run's model is its best epoch; the best was saved although the interval let only
    # improving epochs through; the last epoch is saved too (to go on from).
    _, _, meta = run.restore(workdir)
    assert meta["history"][-1]["epoch"] == best
    assert f"test BCE {history[best - 1]['val_loss']:.4f}" in summary
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == last and best in steps

    # Run again: nothing more is trained.
    assert train_cli.main(common) == 0
    assert "nothing to train" in capsys.readouterr().err
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == last

    # Asked for more, it goes on from its last epoch exactly as a run that never stopped.
    more = last + 3
    assert train_cli.main([*common, "--epochs", str(more)]) == 0
    fixed = tmp_path / "fixed"
    assert train_cli.main([*common[:2], "--workdir", str(fixed), "--epochs", str(more)]) == 0
    capsys.readouterr()
    a = (workdir / "metrics.jsonl").read_text().splitlines()
    b = (fixed / "metrics.jsonl").read_text().splitlines()
    keys = ("epoch", "loss", "val_loss", "holdout_loss")
    assert [[json.loads(x)[k] for k in keys] for x in a] == [
        [json.loads(x)[k] for k in keys] for x in b
    ]
    _, _, meta = run.restore(workdir)
    assert meta["history"][-1]["epoch"] == more  # a fixed length: its last epoch

    # An --epochs below what it has trained is one clear line.
    assert train_cli.main([*common, "--epochs", "2"]) == 2
    assert f"has trained {more} epochs already" in capsys.readouterr().err


def test_a_target_fpr_the_held_out_slice_cannot_support_fails_before_training(tmp_path):
    from aejax import AutoencoderDetector
    from aejax.errors import AejaxError

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 16, 16), np.uint8)  # ~216 train images, 54 held out
    det = AutoencoderDetector("dense", target_fpr=0.01, workdir=tmp_path / "run")
    with pytest.raises(AejaxError, match=r"54 held-out images .* hold out at least 99 images"):
        det.fit(images)
    # Nothing was trained: no checkpoint, no epoch.
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_the_estimator_says_how_training_ended(tmp_path, monkeypatch):
    from sklearn.exceptions import ConvergenceWarning

    from aejax import AutoencoderDetector

    monkeypatch.setenv("AEJAX_MAX_STEPS", "20")  # far too short: it must say so
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 8, 8), np.uint8)
    with pytest.warns(ConvergenceWarning, match="still falling .* --epochs"):
        det = AutoencoderDetector("dense", workdir=tmp_path / "run").fit(images)
    assert "still improving" in det.convergence_

"""`python -m aejax.eval` on a tiny trained checkpoint (dense, 1 epoch on 10k MNIST images)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aejax import core, data, ood
from aejax import eval as evaluation
from aejax.detector import Detector
from aejax.eval import __main__ as eval_cli
from aejax.eval import report as eval_report
from aejax.ood import synthetic
from aejax.train import __main__ as train_cli

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # subprocesses, training, 8-device compiles

REPORT_FIELDS = {
    "config",
    "checkpoint_step",
    "score",
    "positive_class",
    "threshold",
    "threshold_rule",
    "in_distribution",
    "ood",
    "auroc_by_score",
    "stats",
    "workdir",
    "devices",
    "detector",
    "files",
}
OOD_FIELDS = {
    "name", "auroc", "aupr_out", "aupr_in", "fpr_at_95_tpr", "detection_rate", "n", "mean_score"
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    workdir = root / "runs" / "dense-mnist"
    assert train_cli.main(["--arch", "dense", "--epochs", "1", "--workdir", str(workdir)]) == 0
    return root, workdir


def test_cli_writes_every_file_and_field(trained, tmp_path, capsys):
    _, workdir = trained
    out = tmp_path / "out"
    assert (
        eval_cli.main(
            ["--workdir", str(workdir), "--ood", "fashion_mnist,uniform,black", "--out", str(out)]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "positive class: OOD" in stdout and "fashion_mnist" in stdout

    report = json.loads((out / "report.json").read_text())
    assert set(report) == REPORT_FIELDS
    assert report["positive_class"] == "ood" and report["checkpoint_step"] == 1
    assert report["score"] == ood.DEFAULT
    assert set(report["auroc_by_score"]["uniform"]) == set(ood.names())
    # The scores' statistics were fitted and saved next to the checkpoint.
    assert ood.load(workdir / "ood_stats" / "1.npz").meta == report["stats"]
    assert set(report["ood"]) == {"fashion_mnist", "uniform", "black"}
    for name, m in report["ood"].items():
        assert set(m) == OOD_FIELDS, name
        assert 0 <= m["auroc"] <= 1 and m["n"] == 10_000
    ind = report["in_distribution"]
    # The test BCE equals what training reported for this checkpoint.
    assert ind["test_bce"] == pytest.approx(ind["training_reported_test_bce"], rel=1e-6)
    assert ind["n_holdout"] == 1000 and ind["test_flagged"] == pytest.approx(0.05, abs=0.02)
    assert report["ood"]["uniform"]["auroc"] > 0.99  # noise is nothing like digits

    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"dataset", "index", "label", "score", *ood.names()} <= set(rows[0])
    assert rows[0]["score"] == rows[0][ood.DEFAULT]
    counts = {}
    for row in rows:
        counts[(row["dataset"], row["split"])] = counts.get((row["dataset"], row["split"]), 0) + 1
    assert counts == {
        ("mnist", "test"): 10_000,
        ("mnist", "holdout"): 1000,
        ("fashion_mnist", "test"): 10_000,
        ("uniform", "test"): 10_000,
        ("black", "test"): 10_000,
    }
    for name in report["files"]:
        assert (out / name).stat().st_size > 0, name
    assert {
        "roc.png",
        "hist_fashion_mnist.png",
        "reconstructions_mnist.png",
        "reconstructions_black.png",
    } <= set(report["files"])


def test_without_workdir_uses_the_latest_run(trained, monkeypatch, capsys):
    root, workdir = trained
    monkeypatch.chdir(root)
    assert eval_cli.main(["--ood", "uniform", "--score", "bce"]) == 0
    assert "evaluating runs/dense-mnist (the most recently trained run" in capsys.readouterr().err
    assert (workdir / "eval" / "report.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir", "{tmp}/nothing"], "holds no checkpoints"),
        (["--workdir", "{run}", "--ood", "no_such_set"], "unknown OOD set 'no_such_set'"),
        # A path: its own error, where the shell would have put ~ (HOME is the test's tmp).
        (
            ["--workdir", "{run}", "--ood", "uniform,~/new_images"],
            "{tmp}/new_images: no such folder or file",
        ),
        (["--workdir", "{run}", "--ood", "cifar10"], "has 32x32x3 images, the model takes 28x28x1"),
        (["--workdir", "{run}", "--step", "7"], "no checkpoint for step 7"),
        (["--workdir", "{run}", "--step", "last"], "--step: takes an epoch number"),
    ],
)
def test_bad_input_is_one_clear_line(trained, tmp_path, capsys, monkeypatch, args, message):
    _, workdir = trained
    monkeypatch.setenv("HOME", str(tmp_path))
    args = [a.format(tmp=tmp_path, run=workdir) for a in args]
    message = message.format(tmp=tmp_path)
    try:
        code = eval_cli.main(args)
    except SystemExit as e:  # options are refused by argparse, with the same one line
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err


def test_no_runs_at_all_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert eval_cli.main([]) == 2
    assert "no trained run under" in capsys.readouterr().err


def test_the_library_entry_point_reports_what_the_cli_reports(trained, tmp_path):
    _, workdir = trained
    out = tmp_path / "out"
    assert eval_cli.main(["--workdir", str(workdir), "--ood", "uniform", "--out", str(out)]) == 0
    from_cli = json.loads((out / "report.json").read_text())
    result = evaluation.evaluate(workdir, evaluation.EvalConfig(ood=("uniform",)))
    assert result.report["ood"] == from_cli["ood"]
    assert result.report["in_distribution"] == from_cli["in_distribution"]
    assert eval_report.write(result, tmp_path / "lib") == from_cli["files"]


def test_a_folder_ood_set_is_streamed_with_the_scores_of_one_batch(trained, tmp_path, monkeypatch):
    _, workdir = trained
    folder = tmp_path / "clothes"
    folder.mkdir()
    clothes = data.load("fashion_mnist", "test[:50]")[0]
    for i, image in enumerate(clothes):
        Image.fromarray(image[..., 0]).save(folder / f"{i:03d}.png")
    row_bytes = evaluation.run_detector(workdir)[0].stats.row_bytes()
    monkeypatch.setattr(core.evaluator, "CHUNK_BYTES", 8 * row_bytes)  # 7 chunks, the last of 2
    (out,) = evaluation.evaluate(workdir, evaluation.EvalConfig(ood=(str(folder),))).outs
    assert len(out.labels) == 50 and len(out.images) == evaluation.KEPT_IMAGES
    np.testing.assert_array_equal(out.images, clothes[: evaluation.KEPT_IMAGES])
    want = Detector.load(workdir).detect(clothes)  # the 50 files' images at once
    for name in ood.names():
        np.testing.assert_allclose(out.scores[name], want[name], rtol=1e-4, atol=1e-4)


def test_synthetic_sets_are_seeded_and_well_formed():
    like = np.random.default_rng(0).integers(0, 256, (50, 28, 28, 1), np.uint8)
    for name in synthetic.SYNTHETIC:
        images = synthetic.synthetic(name, like, seed=3)
        assert images.shape == like.shape and images.dtype == np.uint8, name
        np.testing.assert_array_equal(images, synthetic.synthetic(name, like, seed=3))
    assert not np.array_equal(
        synthetic.synthetic("uniform", like, 3), synthetic.synthetic("uniform", like, 4)
    )
    assert (synthetic.synthetic("black", like) == 0).all() and (
        synthetic.synthetic("white", like) == 255
    ).all()
    np.testing.assert_array_equal(synthetic.synthetic("inverted", like), 255 - like)
    constant = synthetic.synthetic("constant", like)
    assert (constant == constant[:, :1, :1, :]).all()


def test_the_ood_suite_scores_every_model_on_seven_sets(tmp_path):
    # experiments/ood_suite.py on dense runs of one epoch trained here (a dense epoch takes
    # less than a second; conv is evaluated the same way elsewhere). The default held-out
    # slice: every held-out image is scored for the statistics, and a larger one costs more.
    runs = tmp_path / "runs"
    for dataset in ("mnist", "fashion_mnist"):
        args = ["--arch", "dense", "--dataset", dataset, "--epochs", "1"]
        assert train_cli.main([*args, "--workdir", str(runs / f"dense-{dataset}")]) == 0
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "ood_suite.py"),
            "--archs",
            "dense",
            "--runs-dir",
            str(runs),
            "--out",
            str(out),
            "--epochs",
            "1",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    suite = json.loads((out / "ood_suite_dense.json").read_text())
    assert suite["default"] == ood.DEFAULT and len(suite["models"]) == 2
    for model in suite["models"]:
        assert len(model["auroc"]) == 7  # the other dataset and six synthetic sets
        assert all(set(by) == set(ood.names()) for by in model["auroc"].values())
        assert set(model["selection_auroc"]) == {"uniform", "gaussian", "black", "grey",
                                                 "white", "inverted"}  # fmt: skip
    table = (out / "ood_suite_dense.md").read_text()
    assert "How the default was chosen" in table and f"`{ood.DEFAULT}`" in table


def test_training_and_eval_write_tensorboard_events(trained, tmp_path):
    _, workdir = trained
    out = tmp_path / "out"
    assert eval_cli.main(["--workdir", str(workdir), "--ood", "uniform", "--out", str(out)]) == 0
    import tensorflow as tf  # its reader of event files: what TensorBoard reads them with

    tags = {}
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags[value.tag] = (event.step, value)
    assert tags["loss/val_loss"][0] == 1 and tags["loss/val_loss"][1].simple_value > 0
    step, grid = tags["reconstructions/test"]  # the last epoch's grid: 8 inputs over outputs
    assert step == 1 and (grid.image.height, grid.image.width) == (56, 224)
    assert 0.5 < tags["eval/auroc/uniform"][1].simple_value <= 1
    assert tags[f"eval/{ood.DEFAULT}/mnist-test"][1].histo.num == 10_000
    assert tags["eval/roc"][1].image.width > 100

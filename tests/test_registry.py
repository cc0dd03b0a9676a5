"""An OOD score registered here, in this file alone, reaches every place scores go: aejax.eval's
report and CSV, aejax.score's CSV, the exported detector's outputs, the Python API."""

import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest

from aejax import data, ood
from aejax.detector import Detector
from aejax.eval import __main__ as eval_cli
from aejax.export import __main__ as export_cli
from aejax.score import __main__ as score_cli
from aejax.train import __main__ as train_cli

pytestmark = pytest.mark.slow  # trains and evaluates through the commands


def _fit(train_terms: dict, held_out: dict) -> dict:
    # What it fits on held-out images: their median BCE.
    return {"median": np.float64(np.median(held_out["bce"]))}


BCE_ABOVE_MEDIAN = ood.Score(
    "bce-above-median",
    needs=("bce",),
    compute=lambda fitted, x: jnp.asarray(x["bce"], jnp.float32) - fitted["median"],
    fit=_fit,
)


@pytest.fixture
def registered():
    ood.register(BCE_ABOVE_MEDIAN)
    try:
        yield BCE_ABOVE_MEDIAN.name
    finally:
        ood.unregister(BCE_ABOVE_MEDIAN.name)


def test_a_score_registered_in_a_test_file_is_everywhere(registered, tmp_path, capsys):
    workdir = tmp_path / "run"
    small = ["--arch", "dense", "--epochs", "1", "--workdir", str(workdir)]
    assert train_cli.main(small) == 0
    assert eval_cli.main(["--workdir", str(workdir), "--ood", "uniform"]) == 0
    report = json.loads((workdir / "eval" / "report.json").read_text())
    assert registered in report["auroc_by_score"]["uniform"]
    with open(workdir / "eval" / "scores.csv") as f:
        assert registered in next(csv.reader(f))
    # Its statistics were fitted on the held-out images and saved with the others.
    stats = ood.load(ood.stats_path(workdir, 1))
    median = float(stats.fitted[registered]["median"])
    assert median == pytest.approx(np.median(stats.holdout_scores["bce"]), rel=1e-6)

    images = data.load("mnist", "test[:20]")[0]
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "scores.csv"
    assert score_cli.main(["--workdir", str(workdir), str(tmp_path / "images.npy"),
                               "--out", str(out), "--score", registered]) == 0  # fmt: skip
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["score"]) for r in rows] == [float(r[registered]) for r in rows]

    detector = Detector.load(workdir)
    expected = detector.detect(images)[registered]
    np.testing.assert_allclose([float(r[registered]) for r in rows], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        expected, detector.detect(images)["bce"] - np.float32(median), rtol=1e-6
    )

    folder = tmp_path / "detector"
    argv = ["--workdir", str(workdir), "--out", str(folder), "--platforms", "cpu"]
    assert export_cli.main(argv) == 0
    from jax import export

    meta = json.loads((folder / "metadata.json").read_text())
    assert registered in meta["outputs"]
    artifact = folder / meta["artifacts"]["jax"]["file"]
    exported = export.deserialize(artifact.read_bytes()).call(images)
    np.testing.assert_allclose(np.asarray(exported[registered]), expected, rtol=1e-6)
    capsys.readouterr()


def test_a_score_needs_what_is_registered_before_it():
    with pytest.raises(ValueError, match="neither terms nor registered scores"):
        ood.register(ood.Score("x", ("no-such-score",), lambda fitted, x: x))
    assert "x" not in ood.names()

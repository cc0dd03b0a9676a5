"""aejax's detector beside PyOD's AutoEncoder, each with its defaults, on the same images in
one sitting: fit time, scoring time at batch 1, 64 and 10,000 (the first call, which
compiles, and the median of later ones), AUROC.

    python experiments/pyod_compare.py --pyod-python ~/.peer-venvs/pyod/bin/python

Three tasks: MNIST with one digit normal (0: its training images; the test split's other
digits are the anomalies), MNIST against Fashion-MNIST (all MNIST training images; the two
test splits), and a folder of real photos (300 32x32 crops of scikit-image's ``chelsea``
as normal; crops of ``coffee`` as the anomalies; experiments/own_data_defaults.py's
folders). Each detector runs in a fresh process of its own (PyOD in a virtualenv with
``torch==2.13.0 pyod``, as ../shared/bench/peers/README.md installs torch), from the same
.npy files: aejax's ``AutoencoderDetector()`` on uint8 images, PyOD's ``AutoEncoder()`` on
the flat rows scaled to [0, 1] (its own preprocessing standardises them). Writes
experiments/results/pyod_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT, cpu_name, crops, skimage_image, write_results

BATCHES = (1, 64, 10_000)
REPEATS = 5

# Runs in either process: fit, then time decision_function; prints one JSON line.
CHILD = r"""
import json, statistics, sys, time
import numpy as np
from sklearn.metrics import roc_auc_score

which, folder = sys.argv[1], sys.argv[2]
train, test, truth = (np.load(f"{folder}/{n}.npy") for n in ("train", "test", "truth"))
if which == "aejax":
    from aejax import AutoencoderDetector
    det, prepare = AutoencoderDetector(), lambda x: x
else:
    from pyod.models.auto_encoder import AutoEncoder
    det, prepare = AutoEncoder(verbose=0), lambda x: x.reshape(len(x), -1) / 255.0
start = time.perf_counter()
det.fit(prepare(train))
fit_seconds = time.perf_counter() - start
auroc = roc_auc_score(truth, det.decision_function(prepare(test)))
timing = {}
for n in BATCHES:
    batch = prepare(np.resize(test, (n, *test.shape[1:])))
    seconds = []
    for _ in range(REPEATS + 1):
        start = time.perf_counter()
        det.decision_function(batch)
        seconds.append(time.perf_counter() - start)
    timing[n] = {"first_s": seconds[0], "median_s": statistics.median(seconds[1:])}
print(json.dumps({"fit_s": fit_seconds, "auroc": auroc, "scoring": timing}))
""".replace("BATCHES", repr(BATCHES)).replace("REPEATS", str(REPEATS))


def tasks(folder: Path) -> dict[str, Path]:
    """Each task's train.npy, test.npy and truth.npy (1: anomaly), in its own folder."""
    sys.path.insert(0, str(ROOT))
    from aejax import data

    out = {}

    def save(name, train, test, truth):
        where = folder / name
        where.mkdir(parents=True, exist_ok=True)
        for part, array in (("train", train), ("test", test), ("truth", truth)):
            np.save(where / f"{part}.npy", array)
        out[name] = where

    digits, labels = data.load("mnist", "train")
    test, test_labels = data.load("mnist", "test")
    save("mnist, digit 0 normal", digits[labels == 0], test, (test_labels != 0).astype(int))
    fashion, _ = data.load("fashion_mnist", "test")
    save("mnist vs fashion_mnist", digits, np.concatenate([test, fashion]),
         np.r_[np.zeros(len(test), int), np.ones(len(fashion), int)])  # fmt: skip
    rng = np.random.default_rng(0)
    normal = crops(skimage_image("chelsea"), 600, 32, rng)
    other = crops(skimage_image("coffee"), 300, 32, rng)
    save("photos: chelsea vs coffee crops", normal[:300], np.concatenate([normal[300:], other]),
         np.r_[np.zeros(300, int), np.ones(300, int)])  # fmt: skip
    return out


def run(python: str, which: str, folder: Path) -> dict:
    result = subprocess.run([python, "-c", CHILD, which, str(folder)], cwd=ROOT,
                            capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode:
        raise SystemExit(f"{which} on {folder.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pyod-python", required=True, help="a python with torch and pyod")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in tasks(Path(tmp)).items():
            for which, python in (("aejax", sys.executable), ("pyod", args.pyod_python)):
                found = run(python, which, folder)
                rows.append({"task": name, "detector": which, "cpu": cpu_name(), **found})
                print(rows[-1], flush=True)
    write_results("pyod_compare", rows, markdown(rows))


def markdown(rows: list[dict]) -> list[str]:
    lines = [
        "# aejax beside PyOD's AutoEncoder (`python experiments/pyod_compare.py`)",
        "",
        f"CPU: {cpu_name()}, 2 cores; one sitting, each detector in a fresh process, its "
        "defaults. Scoring: seconds per image, first call (compiling) / median of "
        f"{REPEATS} later calls.",
        "",
        "| task | detector | fit s | AUROC | "
        + " | ".join(f"batch {n:,}: first / later" for n in BATCHES)
        + " |",
        "|---" * (4 + len(BATCHES)) + "|",
    ]
    for r in rows:
        timing = {int(n): t for n, t in r["scoring"].items()}
        cells = [f"{timing[n]['first_s'] / n:.2e} / {timing[n]['median_s'] / n:.2e}"
                 for n in BATCHES]  # fmt: skip
        lines.append(
            f"| {r['task']} | {r['detector']} | {r['fit_s']:.1f} | {r['auroc']:.4f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


if __name__ == "__main__":
    main()

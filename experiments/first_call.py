"""The first call against the second: a one-image ``aejax.score`` and a 10,000-image score from
Python, with JAX's persistent compilation cache empty and then filled, beside PyOD's
AutoEncoder in the same sitting.

    python experiments/first_call.py --pyod-python ~/.peer-venvs/pyod/bin/python

The detector: a dense run on MNIST with the defaults (``python -m aejax.train --arch dense``
then ``aejax.eval --ood fashion_mnist``; ``runs/first_call/dense-mnist``, trained here when
missing). Each measurement is a fresh process with ``XDG_CACHE_HOME`` set to a new folder,
so the cache starts empty:

* ``aejax.score`` of one MNIST test image (a ``.npy`` file): the whole command's wall time,
  three times in a row on the same cache (the first compiles and fills it, the others load),
  and once with ``--no-compile-cache``.
* Python: ``AutoencoderDetector.load(run)`` then ``decision_function`` of the 10,000 MNIST
  test images twice in one process (its first call and second call), in two processes in a
  row on the same cache (cold, then warm), with the import and load times apart.
* PyOD: ``AutoEncoder()`` fitted on the MNIST training images (flat, /255) in its own
  virtualenv, then ``decision_function`` of the 10,000 test images, first and second call.

Writes experiments/results/first_call.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, cpu_name, run_aejax, write_results

RUN = ROOT / "runs" / "first_call" / "dense-mnist"

PYTHON_SCORE = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np
from aejax import AutoencoderDetector
imported = time.perf_counter()
det = AutoencoderDetector.load(sys.argv[1])
loaded = time.perf_counter()
x = np.load(sys.argv[2])
calls = []
for _ in range(2):
    t = time.perf_counter()
    det.decision_function(x)
    calls.append(time.perf_counter() - t)
print(json.dumps({"import": imported - start, "load": loaded - imported, "first": calls[0],
                  "second": calls[1]}))
"""

PYOD_SCORE = r"""
import json, sys, time
import numpy as np
from pyod.models.auto_encoder import AutoEncoder
train, test = (np.load(p).reshape(-1, 784) / 255.0 for p in sys.argv[1:3])
det = AutoEncoder(verbose=0)
t = time.perf_counter()
det.fit(train)
fit = time.perf_counter() - t
calls = []
for _ in range(2):
    t = time.perf_counter()
    det.decision_function(test)
    calls.append(time.perf_counter() - t)
print(json.dumps({"fit": fit, "first": calls[0], "second": calls[1]}))
"""


def wall(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return round(time.perf_counter() - start, 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pyod-python", required=True, help="a python with torch and pyod")
    args = p.parse_args()
    from aejax import data

    if not (RUN / "ood_stats").is_dir():
        run_aejax("train", "--arch", "dense", "--workdir", str(RUN))
        run_aejax("eval", "--workdir", str(RUN), "--ood", "fashion_mnist")
    scratch = Path(tempfile.mkdtemp(prefix="aejax-first-call-"))
    test, _ = data.load("mnist", "test")
    np.save(scratch / "one.npy", test[:1])
    np.save(scratch / "test.npy", test)
    np.save(scratch / "train.npy", data.load("mnist", "train")[0])

    cache = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache-score")}
    score = [sys.executable, "-m", "aejax.score", "--workdir", str(RUN), str(scratch / "one.npy"),
             "--out", str(scratch / "one.csv")]  # fmt: skip
    one_image = [wall(score, cache) for _ in range(3)]
    uncached = wall([*score, "--no-compile-cache"], cache)

    env = {**os.environ, "XDG_CACHE_HOME": str(scratch / "cache-python")}
    python = []
    for _ in range(2):  # an empty cache, then the one the first process filled
        out = subprocess.run(
            [sys.executable, "-c", PYTHON_SCORE, str(RUN), str(scratch / "test.npy")],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        python.append({k: round(v, 3) for k, v in json.loads(out.splitlines()[-1]).items()})
    out = subprocess.run(
        [args.pyod_python, "-c", PYOD_SCORE, str(scratch / "train.npy"), str(scratch / "test.npy")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    pyod = {k: round(v, 3) for k, v in json.loads(out.splitlines()[-1]).items()}
    row = {"cpu": cpu_name(), "one_image_score_command": one_image,
           "one_image_no_cache": uncached, "python_10000": python, "pyod_10000": pyod}  # fmt: skip
    print(json.dumps(row))
    write_results("first_call", [row], markdown(row))


def markdown(r: dict) -> list[str]:
    cold, warm = r["python_10000"]
    return [
        "# The first call and the second",
        "",
        f"`python experiments/first_call.py` on {r['cpu']}, 2 cores, one job at a time: a dense",
        "MNIST run with the defaults; every process starts with an empty JAX compilation cache",
        "(a fresh `XDG_CACHE_HOME`) unless it says warm.",
        "",
        "## `python -m aejax.score` of one image (whole command, wall seconds)",
        "",
        "| first (cache empty) | second (cache filled) | third | `--no-compile-cache` |",
        "|---|---|---|---|",
        "| "
        + " | ".join(f"{s:.2f}" for s in r["one_image_score_command"])
        + f" | {r['one_image_no_cache']:.2f} |",
        "",
        "## Scoring 10,000 MNIST test images from Python (seconds)",
        "",
        "| | import | load | first `decision_function` | second |",
        "|---|---|---|---|---|",
        f"| aejax, new process, cache empty | {cold['import']:.2f} | {cold['load']:.2f} | "
        f"{cold['first']:.3f} | {cold['second']:.3f} |",
        f"| aejax, new process, cache filled | {warm['import']:.2f} | {warm['load']:.2f} | "
        f"{warm['first']:.3f} | {warm['second']:.3f} |",
        f"| PyOD AutoEncoder (fitted in {r['pyod_10000']['fit']:.0f} s) | | | "
        f"{r['pyod_10000']['first']:.3f} | {r['pyod_10000']['second']:.3f} |",
        "",
    ]


if __name__ == "__main__":
    main()

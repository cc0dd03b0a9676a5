"""How close do the exported detectors (ONNX run by onnxruntime, the SavedModel run by
TensorFlow, each in a process without JAX) come to aejax's own scores, with the encoder's
features pooled by :func:`aejax.reductions.accurate_mean` and by a plain float32 mean (what
aejax did before)? And what does the accurate pooling cost?

    python experiments/deploy_parity.py    # writes experiments/results/deploy_parity.{md,json}

Three runs with ``python -m aejax.train``'s defaults (in runs/deploy/, reused when finished):
the dense net, the conv net and a dense ensemble of 2, each fitted by ``python -m aejax.eval``.
1,000 test images (500 MNIST, 500 Fashion-MNIST) are scored by ``Detector.detect`` and by
both exports; the table gives each score's largest relative difference. Each variant runs in
a process of its own (``measure``), the plain one with the features' mean swapped for
``jnp.mean`` before anything is traced. The time (``timing``) is ``Detector.detect`` on
10,000 MNIST test images, the two poolings in turn in one process. The results keep a
section for each CPU the script has run on; a run replaces its own CPU's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    RESULTS,
    ROOT,
    cpu_name,
    largest_relative_differences,
    run_aejax,
    train,
    write_results,
)

RUNS = {
    "dense": ["--arch", "dense"],
    "conv": ["--arch", "conv"],
    "dense, ensemble of 2": ["--arch", "dense", "--ensemble", "2"],
}
VARIANTS = ("plain", "accurate")
RUNTIMES = {"onnx": "onnxruntime", "saved_model": "TensorFlow"}
SHOWN = ("bce", "mse", "kl", "entropy", "latent", "knn", "feat-maha", "feat-knn", "joint")

# Run in a fresh interpreter with JAX (and aejax) made unimportable, as a deployment has it.
OUTSIDE_JAX = r"""
import importlib.abc, sys
import numpy as np
from aejax import xla

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

class NoJax(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "aejax"):
            raise ImportError(f"no {name} here")

sys.meta_path.insert(0, NoJax())
kind, model, images, out = sys.argv[1:]
x = np.load(images)
if kind == "onnx":
    import onnxruntime as ort
    session = ort.InferenceSession(model)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"images": x})))
else:
    import tensorflow as tf
    detect = tf.saved_model.load(model).signatures["serving_default"]
    got = {k: v.numpy() for k, v in detect(images=tf.constant(x)).items()}
np.savez(out, **got)
"""


def workdir(name: str) -> Path:
    return ROOT / "runs" / "deploy" / name.replace(", ", "-").replace(" ", "-")


def measure(run: str, variant: str, out: Path) -> None:
    """One variant of one run: its scores in JAX and in both exports, and its time."""
    import jax.numpy as jnp

    from aejax import data
    from aejax import export as exporting
    from aejax.detector import Detector
    from aejax.models import base

    if variant == "plain":
        base.accurate_mean = lambda x, axis: jnp.mean(x.astype(jnp.float32), axis=axis)
    detector = Detector.load(workdir(run))
    digits, _ = data.load("mnist", "test")
    clothes, _ = data.load("fashion_mnist", "test[:500]")
    images = np.concatenate([digits[:500], clothes])
    want = detector.detect(images)
    differences = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "images.npy", images)
        exporting.write_onnx(detector, tmp / "detector.onnx")
        exporting.write_saved_model(detector, tmp / "saved_model", ("cpu",))
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
        for kind, model in (("onnx", "detector.onnx"), ("saved_model", "saved_model")):
            command = [sys.executable, "-c", OUTSIDE_JAX, kind, model, "images.npy", "got.npz"]
            subprocess.run(command, check=True, cwd=tmp, env=env, capture_output=True)
            with np.load(tmp / "got.npz") as got:
                differences[kind] = largest_relative_differences(got, want, SHOWN)
    out.write_text(json.dumps({"differences": differences}))


def timing(run: str, out: Path) -> None:
    """``Detector.detect`` on 10,000 MNIST test images with each pooling, in turn, three
    rounds: the median of each round's median of 5 runs after compilation."""
    import jax
    import jax.numpy as jnp

    from aejax import data, reductions
    from aejax.detector import Detector
    from aejax.models import base

    poolings = {
        "plain": lambda x, axis: jnp.mean(x.astype(jnp.float32), axis=axis),
        "accurate": reductions.accurate_mean,
    }
    detector = Detector.load(workdir(run))
    many = data.load("mnist", "test")[0][:10_000]
    rounds = {variant: [] for variant in VARIANTS}
    for _ in range(3):
        for variant in VARIANTS:
            base.accurate_mean = poolings[variant]
            jax.clear_caches()  # traced anew with this pooling
            detector.detect(many)
            seconds = []
            for _ in range(5):
                start = time.perf_counter()
                detector.detect(many)
                seconds.append(time.perf_counter() - start)
            rounds[variant].append(statistics.median(seconds))
    out.write_text(json.dumps({v: statistics.median(s) for v, s in rounds.items()}))


def main() -> None:
    rows = []
    for run, options in RUNS.items():
        train(*options, workdir=workdir(run))
        run_aejax("eval", "--workdir", str(workdir(run)), "--ood", "uniform")
        for variant in VARIANTS:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                command = [sys.executable, __file__, "measure", run, variant, out.name]
                subprocess.run(command, check=True, cwd=ROOT / "experiments")
                rows.append(
                    {"run": run, "variant": variant, **json.loads(Path(out.name).read_text())}
                )
            print(rows[-1], flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, __file__, "timing", run, out.name]
            subprocess.run(command, check=True, cwd=ROOT / "experiments")
            seconds = json.loads(Path(out.name).read_text())
        for r in rows[-len(VARIANTS) :]:
            r["detect_s"] = seconds[r["variant"]]
        print(run, seconds, flush=True)
    # Each CPU vectorises and fuses its own way, so earlier CPUs' rows are kept beside this one's.
    cpu = cpu_name()
    earlier = RESULTS / "deploy_parity.json"
    kept = json.loads(earlier.read_text()) if earlier.is_file() else []
    results = [r for r in kept if r["cpu"] != cpu] + [{"cpu": cpu, **r} for r in rows]
    write_results("deploy_parity", results, markdown(results))


def markdown(results: list[dict]) -> list[str]:
    lines = [
        "# Deployment parity: the exported detectors against aejax's own scores",
        "",
        "`python experiments/deploy_parity.py`, once on each CPU named below: runs with "
        "`aejax.train`'s defaults, 500 MNIST and 500 Fashion-MNIST test images, the largest "
        "relative difference of each score between `Detector.detect` (what `aejax.score` "
        "writes) and the ONNX model run by onnxruntime / the SavedModel run by TensorFlow, each "
        "in a process without JAX. *plain*: the encoder's features pooled by a float32 "
        "`jnp.mean` (aejax before); *accurate*: by `aejax.reductions.accurate_mean` (aejax "
        "now). Raw scores are held to 1e-5 (tests/test_score.py).",
        "",
        "The time: `Detector.detect` on 10,000 MNIST test images, in one process, the poolings "
        "in turn (three rounds; the median of each round's median of 5 runs after compilation). "
        "The dense nets pool nothing: their two columns run the same program, and show how much "
        "the time varies.",
    ]
    for cpu in dict.fromkeys(r["cpu"] for r in results):
        rows = [r for r in results if r["cpu"] == cpu]
        lines += [
            "",
            f"## {cpu}",
            "",
            "| run | pooling | runtime | " + " | ".join(SHOWN) + " |",
            "|---|---|---|" + "---|" * len(SHOWN),
        ]
        for r in rows:
            for kind, differences in r["differences"].items():
                cells = " | ".join(f"{differences[name]:.1e}" for name in SHOWN)
                lines.append(f"| {r['run']} | {r['variant']} | {RUNTIMES[kind]} | {cells} |")
        lines += [
            "",
            "| run | plain pooling | accurate pooling | accurate / plain |",
            "|---|---|---|---|",
        ]
        for run in dict.fromkeys(r["run"] for r in rows):
            s = {r["variant"]: r["detect_s"] for r in rows if r["run"] == run}
            lines.append(f"| {run} | {s['plain']:.3f} s | {s['accurate']:.3f} s "
                         f"| {s['accurate'] / s['plain']:.2f}x |")  # fmt: skip
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        measure(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    elif sys.argv[1:2] == ["timing"]:
        timing(sys.argv[2], Path(sys.argv[3]))
    else:
        main()

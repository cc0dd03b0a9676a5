"""The real thing on a GPU, when a session is lent one (the device tool): train, fit, score and
run the exported artifact there, and compare each score with the same checkpoint scored on
the CPU of that machine.

    python experiments/gpu_check.py DATA_DIR OUT_DIR

DATA_DIR holds ``train.npy`` (MNIST training images) and ``test.npy`` (MNIST and
Fashion-MNIST test images), made here: the GPU machine reaches no network and has no TFDS
data. For the dense and the conv net: ``aejax.train`` (``--dataset train.npy``) and
``aejax.eval --ood uniform`` on the GPU; ``Detector.detect`` of the test images on the GPU
and, in a process of its own, on the CPU (``JAX_PLATFORMS=cpu``): each raw score's largest
relative difference; ``aejax.export``'s artifact (lowered for cpu, cuda and tpu) called on
the GPU against ``detect`` there; detect's time on both. Writes OUT_DIR/gpu_check.json and
prints it; the session copies it to experiments/results/.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import largest_relative_differences

from aejax import xla

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

RAW = ("bce", "mse", "kl", "entropy", "latent", "knn", "feat-maha", "feat-knn", "joint")
RUNS = {"dense": ["--epochs", "5"], "conv": ["--epochs", "3"]}


def aejax(*args: str, env=None) -> None:
    command = [sys.executable, "-m", *args]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, env=env)


def detect(workdir: str, images: str, out: str) -> None:
    """In this process (whatever platform JAX has): every output of ``detect`` and its
    median time after compilation."""
    import jax
    import numpy as np

    from aejax.detector import Detector

    x = np.load(images)
    detector = Detector.load(workdir)
    got = detector.detect(x)
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        detector.detect(x)
        seconds.append(time.perf_counter() - start)
    np.savez(out, **got, seconds=statistics.median(seconds), platform=jax.devices()[0].platform)


def artifact(folder: str, images: str, out: str) -> None:
    """The exported artifact called on this process's default device."""
    import numpy as np
    from jax import export

    meta = json.loads((Path(folder) / "metadata.json").read_text())
    call = export.deserialize((Path(folder) / meta["artifact"]).read_bytes())
    np.savez(out, **{k: np.asarray(v) for k, v in call.call(np.load(images)).items()})


def main(data_dir: Path, out_dir: Path) -> None:
    import jax
    import numpy as np

    report = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "runs": {}}
    print(report, flush=True)
    images = str(data_dir / "test.npy")
    for arch, options in RUNS.items():
        workdir = f"/tmp/gpu_check/{arch}"
        start = time.perf_counter()
        aejax("aejax.train", "--arch", arch, "--dataset", str(data_dir / "train.npy"),
              *options, "--workdir", workdir)  # fmt: skip
        train_s = time.perf_counter() - start
        aejax("aejax.eval", "--workdir", workdir, "--ood", "uniform")
        here = {}
        for platform in ("gpu", "cpu"):
            env = {**os.environ, **({"JAX_PLATFORMS": "cpu"} if platform == "cpu" else {})}
            out = f"/tmp/gpu_check/{arch}-{platform}.npz"
            command = [sys.executable, __file__, "detect", workdir, images, out]
            subprocess.run(command, check=True, env=env)
            here[platform] = dict(np.load(out))
        aejax("aejax.export", "--workdir", workdir, "--out", f"/tmp/gpu_check/{arch}-export")
        out = f"/tmp/gpu_check/{arch}-artifact.npz"
        command = [sys.executable, __file__, "artifact", f"/tmp/gpu_check/{arch}-export",
                   images, out]  # fmt: skip
        subprocess.run(command, check=True)
        exported = dict(np.load(out))

        report["runs"][arch] = {
            "train_seconds_whole_command": round(train_s, 1),
            "detect_platforms": [str(here["gpu"]["platform"]), str(here["cpu"]["platform"])],
            "gpu_vs_cpu": largest_relative_differences(here["gpu"], here["cpu"], RAW),
            "artifact_on_gpu_vs_detect_on_gpu": largest_relative_differences(
                exported, here["gpu"], RAW
            ),
            "verdicts_equal_gpu_cpu": float(np.mean(here["gpu"]["ood"] == here["cpu"]["ood"])),
            "detect_seconds_10k": {p: float(here[p]["seconds"]) for p in ("gpu", "cpu")},
        }
        print(arch, json.dumps(report["runs"][arch], indent=1), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "detect":
        detect(*sys.argv[2:5])
    elif sys.argv[1] == "artifact":
        artifact(*sys.argv[2:5])
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]))

"""A few hundred large images of one's own: aejax's conv net against PyTorch's, same net, same
images, same sitting.

    python experiments/own_images.py                       # 300 RGB images, 128, 256 and 512 px
    python experiments/own_images.py --sizes 128 --epochs 3

For each size S: 300 procedurally drawn RGB pictures (shapes on a dark field) of S x S as
PNG files; ``python -m aejax.train --arch conv --dataset FOLDER --model depth=D`` (D = 3 at
128, 4 at 256, 5 at 512: a 16x16x15 code) with its default held-out slice, then ``aejax.eval
--ood uniform`` and ``aejax.score FOLDER``, each timed as a whole command with its peak RSS
(training twice: first on the folder never seen, with an empty compile cache, as a user's
first run, which prepares the folder and compiles; then with its programs cached, as every
later run; a command's peak RSS is the largest of its own and its child processes', as
``wait4`` reports it); and the PyTorch peer (experiments/peers/torch_ae.py ``--depth D
--batch B``, aejax's batch, channels-last, the fastest PyTorch layout on CPU) on the very
rows aejax trains and tests on (``aejax.data.load``). Seconds per epoch are medians over
the epochs after the first (which compiles), training pass plus test pass, as both time
them. Writes experiments/results/own_images.{json,md}."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, cpu_name, history, write_results
from PIL import Image, ImageDraw

from aejax import xla

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

N_IMAGES = 300
DEPTH = {128: 3, 256: 4, 512: 5}  # poolings that leave a 16x16 code
PEER = Path(os.environ.get("PEER_VENVS", Path.home() / ".peer-venvs")) / "torch/bin/python"


def draw_folder(folder: Path, size: int, n: int = N_IMAGES) -> Path:
    """``n`` RGB pictures of ``size`` x ``size``: a few filled shapes on a dark field."""
    if folder.is_dir() and len(list(folder.glob("*.png"))) == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    for i in range(n):
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            corner = rng.integers(0, size // 2, 2)
            box = [*map(int, corner), *map(int, corner + rng.integers(size // 16, size // 2, 2))]
            colour = tuple(int(v) for v in rng.integers(80, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        image.save(folder / f"{i:04d}.png")
    return folder


def timed(command: list[str], env: dict) -> tuple[float, int, str]:
    """``(wall seconds, peak RSS in MB, stdout)`` of one whole command, run alone."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode})")
    return round(time.perf_counter() - start, 2), usage.ru_maxrss // 1024, out


def peer_data(folder: Path, workdir: Path, data_dir: str, out: Path) -> Path:
    """The rows the aejax run trained and tested on, for the peer (``.npz`` of uint8)."""
    from aejax import data
    from aejax.config import RunConfig

    config = RunConfig.from_dict(json.loads((workdir / "config.json").read_text()))
    n_train = data.num_examples(str(folder), "train", data_dir)
    cut = n_train - config.holdout
    train, _ = data.load(str(folder), f"train[:{cut}]", data_dir)
    test, _ = data.load(str(folder), "test", data_dir)
    np.savez(out, train=train, test=test)
    return out


def one_size(size: int, epochs: int, scratch: Path) -> dict:
    folder = draw_folder(scratch / f"pictures{size}", size)
    depth, data_dir = DEPTH[size], str(scratch / "tfds")
    workdir = scratch / f"run{size}"
    # Caches of the experiment's own: the first training prepares the folder and compiles (a
    # user's first run on these images), the second loads its programs (every later run).
    env = {**os.environ, "TFDS_DATA_DIR": data_dir, "XDG_CACHE_HOME": str(scratch / "cache")}
    aejax = [sys.executable, "-m"]
    train = timed([*aejax, "aejax.train", "--arch", "conv", "--dataset", str(folder),
                   "--model", f"depth={depth}", "--epochs", str(epochs), "--fresh",
                   "--workdir", str(workdir)], env)  # fmt: skip
    runs = history(workdir)
    again = timed([*aejax, "aejax.train", "--arch", "conv", "--dataset", str(folder),
                   "--model", f"depth={depth}", "--epochs", "2", "--fresh",
                   "--workdir", str(scratch / f"again{size}")], env)  # fmt: skip
    evaluate = timed([*aejax, "aejax.eval", "--workdir", str(workdir), "--ood", "uniform"], env)
    score = timed([*aejax, "aejax.score", "--workdir", str(workdir), str(folder), "--out",
                   str(scratch / f"scores{size}.csv")], env)  # fmt: skip
    npz = peer_data(folder, workdir, data_dir, scratch / f"rows{size}.npz")
    batch = json.loads((workdir / "config.json").read_text())["batch_size"]  # the same batch
    peer = timed([str(PEER), str(ROOT / "experiments/peers/torch_ae.py"), "--arch", "conv",
                  "--data", str(npz), "--depth", str(depth), "--epochs", str(epochs),
                  "--batch", str(batch), "--channels-last"], env)  # fmt: skip
    peer_result = json.loads(peer[2].strip().splitlines()[-1])
    with np.load(npz) as rows:
        test_images = len(rows["test"])  # each epoch's test pass (conv_roofline.py counts it)
    epoch_seconds = [h["epoch_seconds"] for h in runs[1:]]
    row = {
        "size": size,
        "depth": depth,
        "batch": batch,
        "images": N_IMAGES,
        "train_images": peer_result["train_images"],
        "test_images": test_images,
        "epochs": epochs,
        "aejax_sec_per_epoch": round(statistics.median(epoch_seconds), 3),
        "torch_channels_last_sec_per_epoch": peer_result["sec_per_epoch_median"],
        "aejax_final_val_loss": round(runs[-1]["val_loss"], 4),
        "torch_final_val_loss": peer_result["final_val_loss"],
        "train_command": {"seconds": train[0], "peak_rss_mb": train[1]},
        "train_again_peak_rss_mb": again[1],  # its programs loaded from the compile cache
        "eval_command": {"seconds": evaluate[0], "peak_rss_mb": evaluate[1]},
        "score_command": {"seconds": score[0], "peak_rss_mb": score[1], "images": N_IMAGES},
        "torch_command": {"seconds": peer[0], "peak_rss_mb": peer[1]},
    }
    row["ratio"] = round(row["aejax_sec_per_epoch"] / row["torch_channels_last_sec_per_epoch"], 3)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[128, 256, 512], choices=sorted(DEPTH)
    )
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aejax-own-images-") as tmp:
        rows = [one_size(size, args.epochs, Path(tmp)) for size in args.sizes]
    cpu = cpu_name()
    lines = [
        "# A few hundred large images of one's own: aejax against PyTorch",
        "",
        f"`python experiments/own_images.py --epochs {args.epochs}` on {cpu}, 2 cores, one "
        "job at a time. 300 RGB PNGs per size; aejax's conv net with `--model depth=D` and "
        "its default held-out slice and batch; the PyTorch peer (channels-last) with "
        "`--depth D` and that batch on the same training and test rows. s/epoch: median "
        "after the first epoch, training pass + test pass. Whole commands: wall seconds and "
        "peak RSS (of the command or of a child process it ran, whichever is larger); "
        "`aejax.train` twice, first on the folder never seen, with an empty compile cache "
        "(a user's first run: it prepares the folder and compiles), then again for 2 epochs "
        "with its programs cached (every later run).",
        "",
        "| size | depth | batch | train images | aejax s/epoch | PyTorch s/epoch | ratio | "
        "`aejax.train` (s, peak MB) | again, compiled programs cached | `aejax.eval` | "
        "`aejax.score` of 300 | PyTorch script |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        command = [r[k] for k in ("train_command", "eval_command", "score_command",
                                  "torch_command")]  # fmt: skip
        lines.append(
            f"| {r['size']}x{r['size']}x3 | {r['depth']} | {r['batch']} | {r['train_images']} | "
            f"{r['aejax_sec_per_epoch']} | {r['torch_channels_last_sec_per_epoch']} | "
            f"{r['ratio']} | {command[0]['seconds']} s, {command[0]['peak_rss_mb']} MB | "
            f"{r['train_again_peak_rss_mb']} MB | "
            + " | ".join(f"{c['seconds']} s, {c['peak_rss_mb']} MB" for c in command[1:])
            + " |"
        )
    write_results("own_images", [{"cpu": cpu, **r} for r in rows], lines)


if __name__ == "__main__":
    main()

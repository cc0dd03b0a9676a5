"""What the experiment scripts share: running ``python -m aejax.train`` and reading its history."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
# The OOD experiments' runs (python -m aejax.train defaults), shared by ood.py and
# ood_suite.py, and their one list of OOD sets: the other dataset and these synthetic ones.
OOD_RUNS = ROOT / "runs" / "ood"
OTHER = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}
SYNTHETIC_SETS = ["uniform", "gaussian", "black", "grey", "white", "inverted"]
# An RGB dataset made offline (bench.py's conv-rgb32, ood_general.py's RGB run).
RGB32 = {"images": 70_000, "seed": 0}


def train(*options: str, workdir: Path | None = None) -> list[dict]:
    """Runs ``python -m aejax.train OPTIONS --workdir WORKDIR`` (a temporary one if None; a
    finished run there is reused, an interrupted one resumed) and returns its per-epoch
    metrics (``metrics.jsonl``)."""
    if workdir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return train(*options, workdir=Path(tmp))
    run_aejax("train", *options, "--workdir", str(workdir))
    return history(workdir)


def run_aejax(tool: str, *options: str) -> None:
    """Runs ``python -m aejax.TOOL OPTIONS`` from the repository root, echoing it."""
    command = [sys.executable, "-m", f"aejax.{tool}", *options]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def history(workdir: Path) -> list[dict]:
    """A training run's per-epoch metrics, oldest first."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def summary(history: list[dict]) -> dict:
    """Seconds per epoch after the first (which compiles) and the test BCE of every epoch."""
    seconds = [h["epoch_seconds"] for h in history[1:]] or [history[0]["epoch_seconds"]]
    return {
        "sec_per_epoch_median": round(statistics.median(seconds), 3),
        "sec_per_epoch_min": round(min(seconds), 3),
        "sec_per_epoch_max": round(max(seconds), 3),
        "val_loss": [round(h["val_loss"], 5) for h in history],
    }


def largest_relative_differences(got: dict, want: dict, names) -> dict[str, float]:
    """For each of ``names``: the largest relative difference of ``got[name]`` from
    ``want[name]`` (arrays), in float64."""
    import numpy as np

    return {k: float(np.max(np.abs(got[k].astype(np.float64) / want[k] - 1))) for k in names}


def cpu_name() -> str:
    """The CPU's model name (what ``lscpu`` calls it), for the results' headers."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def write_results(name: str, rows: list[dict], markdown_lines: list[str]) -> None:
    """``experiments/results/NAME.json`` (the rows) and ``NAME.md`` (the lines), then prints
    the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(markdown_lines) + "\n")
    print((RESULTS / f"{name}.md").read_text())


def rgb32_data(folder: Path) -> tuple[Path, Path]:
    """``(images.npy, split.npz)``: 32x32 RGB crops of scikit-learn's sample photos, and the
    same images as aejax splits them (train/test by the hash of the row index) for the
    peers. Made once per folder."""
    npy, npz = folder / "rgb32.npy", folder / "rgb32_split.npz"
    folder.mkdir(parents=True, exist_ok=True)
    if npy.is_file() and npz.is_file():
        return npy, npz
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from aejax.data.sources.base import split_by_hash

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(RGB32["seed"])
    images = np.empty((RGB32["images"], 32, 32, 3), np.uint8)
    for i in range(len(images)):
        photo = photos[i % len(photos)]
        side = int(rng.integers(32, 129))  # a 32..128 pixel square, resized to 32x32
        x, y = rng.integers(0, photo.width - side), rng.integers(0, photo.height - side)
        crop = photo.resize((32, 32), Image.BILINEAR, box=(x, y, x + side, y + side))
        images[i] = np.asarray(crop)[:, ::-1] if rng.random() < 0.5 else np.asarray(crop)
    np.save(npy, images)
    rows = split_by_hash(list(range(len(images))), str)  # aejax's own rule
    np.savez(npz, **{split: images[r] for split, r in rows.items()})
    return npy, npz


# The RGB benchmark made of scikit-image's bundled images (ood_general.py): crops of one kind
# of image in distribution (a stained tissue section under the microscope), written as PNG
# files and trained on through --dataset FOLDER as a user would; crops of the others are OOD.
MICROSCOPY32 = {"images": 10_000, "seed": 0, "image": "immunohistochemistry"}
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "stereo_motorcycle")
SKIMAGE_SCIENCE = ("retina", "hubble_deep_field", "cell")  # fundus, sky, grey cells


def skimage_image(name: str):
    """A scikit-image bundled image as ``[H, W, 3]`` uint8 (grey ones repeated)."""
    import numpy as np
    from skimage import data as skdata

    image = getattr(skdata, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left one
    image = np.asarray(image)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def crops32(image_HxWx3, n: int, rng):
    """``n`` random squares of 32-96 pixels of the image, resized to 32x32 ``[n, 32, 32, 3]``."""
    return crops(image_HxWx3, n, 32, rng)


def crops(image_HxWx3, n: int, side: int, rng):
    """``n`` random squares of ``side`` to 3 ``side`` pixels of the image, resized to
    ``side`` x ``side``: ``[n, side, side, 3]``."""
    import numpy as np
    from PIL import Image

    photo = Image.fromarray(image_HxWx3)
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        square = int(rng.integers(side, min(3 * side + 1, photo.width, photo.height)))
        x, y = rng.integers(0, photo.width - square), rng.integers(0, photo.height - square)
        box = (x, y, x + square, y + square)
        out[i] = np.asarray(photo.resize((side, side), Image.BILINEAR, box=box))
    return out


def microscopy_folder(folder: Path) -> Path:
    """``folder/microscopy32``: MICROSCOPY32's crops as PNG files. Made once per folder."""
    import numpy as np
    from PIL import Image

    out = folder / "microscopy32"
    done = folder / "microscopy32.complete"  # outside: the folder holds images only
    if done.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(MICROSCOPY32["seed"])
    images = crops32(skimage_image(MICROSCOPY32["image"]), MICROSCOPY32["images"], rng)
    for i, image in enumerate(images):
        Image.fromarray(image).save(out / f"{i:05d}.png")
    done.write_text("")
    return out


def skimage_sets(names: tuple[str, ...], n: int, seed: int = 0) -> dict:
    """``{name: [n, 32, 32, 3]}``: crops of each named scikit-image image."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {f"skimage-{name}": crops32(skimage_image(name), n, rng) for name in names}

"""What several test modules do alike."""

import importlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def wait_for_checkpoint(process: subprocess.Popen, workdir: Path, step: int,
                        timeout_s: float = 120) -> None:  # fmt: skip
    """Until ``process`` (a training run) has written checkpoint ``step`` in ``workdir``;
    fails if it exits first or takes longer than ``timeout_s``."""
    deadline = time.time() + timeout_s
    while not (workdir / "checkpoints" / str(step)).exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.02)


def start_aejax(tool: str, *options, output=subprocess.DEVNULL) -> subprocess.Popen:
    """``python -m aejax.TOOL OPTIONS`` in the background; ``output``: where its stdout and
    stderr go (``subprocess.PIPE``: kept, as text)."""
    command = [sys.executable, "-m", f"aejax.{tool}", *map(str, options)]
    return subprocess.Popen(command, stdout=output, stderr=output, text=True)


def shapes(rng, size: int, mode: str) -> Image.Image:
    """A procedurally drawn picture: a few filled ellipses and rectangles on a dark field."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        corner = rng.integers(0, size // 2, 2)
        box = [*map(int, corner), *map(int, corner + rng.integers(4, size // 2, 2))]
        colour = tuple(int(v) for v in rng.integers(80, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image.convert(mode)


def write_images(
    root, n: int, size: int = 32, mode: str = "RGB", seed: int = 0, layout: str = "flat"
):
    rng = np.random.default_rng(seed)
    for i in range(n):
        if layout == "flat":
            path = root / f"sub{i % 3}" / f"img{i:04d}.png"  # a tree, not only one level
        else:  # ImageFolder: split/label/file
            path = root / ("test" if i % 5 == 0 else "train") / f"class{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        shapes(rng, size, mode).save(path)
    return root


def experiments_module(name: str):
    """A module of experiments/ (the protocol, scores not adopted), imported as the scripts
    there import each other."""
    folder = str(Path(__file__).resolve().parent.parent / "experiments")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)

"""README's commands in the order a newcomer types them on a fresh clone: the quickstart, then
every command of "A tour", each in a working directory of its own (runs/ as a clone has it).
No default workdir collides with another, and each command ends with exit code 0."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_images

pytestmark = pytest.mark.slow  # trains four runs through the CLI

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The quickstart's two commands, then each ``python -m aejax`` line of the tour's bash
    blocks. ``srun ... --distributed`` needs a cluster: it is left out here, and runs as
    docs/scaling_out.md writes it, as two processes, in tests/test_parallel.py."""
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)\n", text).group(1)
    quickstart = [part.split(".venv/bin/")[-1] for part in first.split(" && ")[1:]]
    tour = text.split("## A tour", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", tour, re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("python -m aejax"):
                lines.append(line)
    return quickstart + lines


def test_the_readme_tour_runs_in_order_after_the_quickstart(tmp_path):
    commands = readme_commands()
    assert commands[0] == "python -m aejax.train --arch dense", commands
    assert any("--ensemble 8" in c for c in commands) and len(commands) >= 8
    # The user's things: a folder of images, other images, new images, digits and an array.
    places = {
        "~/my_images": write_images(tmp_path / "my_images", 300, size=32),
        "/data/other_images": write_images(tmp_path / "other", 40, size=48, mode="L", seed=1),
        "~/new_images": write_images(tmp_path / "new_images", 5, size=32, seed=2),
        "digits/": write_images(tmp_path / "digits", 4, size=28, mode="L", seed=3),
    }
    np.save(tmp_path / "batch.npy", np.zeros((3, 28, 28), np.uint8))
    # 60 steps for the own-images run: what is tested is the commands, not how well it trains.
    env = {**os.environ, "AEJAX_MAX_STEPS": "60"}
    for command in commands:
        for placeholder, path in places.items():
            command = command.replace(placeholder, str(path))
        argv = shlex.split(command)
        result = subprocess.run(
            [sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        shown = f"$ {command}\n{result.stdout}{result.stderr}"
        assert result.returncode == 0 and "Traceback" not in result.stderr, shown
        assert "differs in" not in result.stderr, shown
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["conv-my_images", "dense-mnist", "dense-mnist-ensemble8"], runs


def test_the_readme_python_block_runs_as_written(tmp_path):
    # README's estimator lines, literally, after a line that gives them their arrays: 1,000
    # MNIST digits as the normal images (a fifth held out: the 99 a 1% FPR needs), 200
    # Fashion-MNIST images as the new ones. 60 steps: the calls are tested, not the fit.
    text = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, re.S)
    given = (
        "from aejax import data\n"
        "normal_images = data.load('mnist', 'train[:1000]')[0]\n"
        "new_images = data.load('fashion_mnist', 'test[:200]')[0]\n"
    )
    check = "\nassert det.predict(new_images).shape == (200,)\nprint('ok')\n"
    env = {**os.environ, "AEJAX_MAX_STEPS": "60"}
    env.pop("XLA_FLAGS", None)
    result = subprocess.run([sys.executable, "-c", given + block + check], cwd=tmp_path,
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]

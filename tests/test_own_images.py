"""README's "Your own images" commands, verbatim, on folders of 50, 300 and 3,000 images:
the few hundred images of one's own that anomaly detection usually starts from."""

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import write_images

pytestmark = pytest.mark.slow  # prepares folders with TensorFlow, trains through the CLI

ROOT = Path(__file__).resolve().parent.parent


def readme_own_images_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("**Your own images**", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("n", [50, 300, 3000])
def test_the_readme_commands_work_on_a_folder_of_n_images(n, tmp_path):
    my_images = write_images(tmp_path / "my_images", n, size=32)
    other = write_images(tmp_path / "other_images", 40, size=48, mode="L", seed=1)
    new = write_images(tmp_path / "new_images", 5, size=32, seed=2)
    places = {"~/my_images": my_images, "/data/other_images": other, "~/new_images": new}
    # 60 steps: what is tested is the commands and their files, not how well it trains.
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds"), "AEJAX_MAX_STEPS": "60"}
    outputs = []
    for command in readme_own_images_commands():
        for placeholder, path in places.items():
            command = command.replace(placeholder, str(path))
        argv = shlex.split(command)
        assert argv[0] == "python"
        result = subprocess.run(
            [sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        outputs.append(result.stdout + result.stderr)

    train_output, eval_output, _ = outputs
    config = json.loads((tmp_path / "runs/conv-my_images/config.json").read_text())
    report = json.loads((tmp_path / "runs/conv-my_images/eval/report.json").read_text())
    # The held-out slice scales with the data, and the command says how many it held out.
    held_out = report["in_distribution"]["n_holdout"]
    trained = re.search(r"(\d+) training images, (\d+) more held out", train_output)
    assert trained and int(trained.group(2)) == held_out == config["holdout"]
    assert held_out == min(1000, (int(trained.group(1)) + held_out) // 5) > 0
    assert f"of {held_out} held-out scores" in eval_output and "with 95% confidence" in eval_output
    # Sets named by their folder's name in the table, figures' files and report.
    assert report["ood"][str(other)]["name"] == "other_images"
    assert re.search(r"^other_images +\d\.\d{4}", eval_output, re.M), eval_output
    written = {p.name for p in (tmp_path / "runs/conv-my_images/eval").iterdir()}
    assert {"roc.png", "hist_other_images.png", "reconstructions_my_images.png"} <= written
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(0 < float(r["p_value"]) <= 1 for r in rows)

"""What README's first command prints after its set-up: the dense reference run trained on
MNIST and evaluated against Fashion-MNIST, with the defaults.

    python experiments/quickstart.py     # experiments/results/quickstart.{txt,json}, figures

Runs ``python -m aejax.train --arch dense`` then ``python -m aejax.eval --ood fashion_mnist``
in a fresh temporary directory (so ``runs/dense-mnist`` is new: a first run) and keeps what
they printed, stdout and stderr as a terminal shows them, with the machine it ran on, and
eval's score histogram and reconstructions (``results/figures/quickstart/``: the docs' pictures).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time

from common import RESULTS, cpu_name

# eval's figures the docs show (README, docs/getting_started.md).
FIGURES = (
    "hist_fashion_mnist.png",
    "reconstructions_mnist.png",
    "reconstructions_fashion_mnist.png",
)
COMMANDS = (["aejax.train", "--arch", "dense"], ["aejax.eval", "--ood", "fashion_mnist"])


def main() -> None:
    transcript, seconds = [], []
    with tempfile.TemporaryDirectory(prefix="aejax-quickstart-") as cwd:
        for command in COMMANDS:
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", *command], cwd=cwd, check=True, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            seconds.append(round(time.perf_counter() - start, 2))
            transcript += [f"$ python -m {' '.join(command)}", result.stdout.rstrip()]
        figures = RESULTS / "figures" / "quickstart"
        figures.mkdir(parents=True, exist_ok=True)
        for name in FIGURES:
            shutil.copy(f"{cwd}/runs/dense-mnist/eval/{name}", figures / name)
    (RESULTS / "quickstart.txt").write_text("\n".join(transcript) + "\n")
    (RESULTS / "quickstart.json").write_text(
        json.dumps({"cpu": cpu_name(), "commands_seconds": seconds}, indent=1) + "\n"
    )
    print("\n".join(transcript))


if __name__ == "__main__":
    main()

"""What each command prints for the bad inputs and faults a user meets (issue 40's classes):
every case run as a user types it, in a fresh process, its exit code and the last line it
printed. A case passes when it exits 2 with one ``error:`` line and no traceback.

    python experiments/bad_inputs.py   # writes experiments/results/bad_inputs.{md,json}

The tests hold each class (tests/test_faults.py, tests/test_paths.py, ...); this is the
record of the cases themselves, for a reader who wants to see them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT, cpu_name, write_results

SMALL = ["--arch", "dense", "--epochs", "1", "--holdout", "50000", "--checkpoint-every", "0"]


def run(tool: str, *args: str, cwd: Path, env: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", f"aejax.{tool}", *args], capture_output=True,
                            text=True, cwd=cwd, env=env, timeout=600)  # fmt: skip
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return {
        "command": " ".join([f"python -m aejax.{tool}", *args]),
        "exit": result.returncode,
        "line": (errors or lines or [""])[-1],
        "traceback": "Traceback" in result.stderr + result.stdout,
        "passed": result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr,
    }


def npy_with_header(path: Path, header: str) -> None:
    """An .npy file whose header numpy parses: ``header`` as its dict."""
    body = header.encode("latin1")
    pad = 64 - (10 + len(body) + 1) % 64
    path.write_bytes(b"\x93NUMPY\x01\x00" + (len(body) + pad + 1).to_bytes(2, "little")
                     + body + b" " * pad + b"\n")  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="aejax-bad-inputs-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        (home / "my_images").mkdir(parents=True)
        # A fresh HOME for "~", the prepared datasets where they are.
        data_dir = os.environ.get("TFDS_DATA_DIR", str(Path.home() / "tensorflow_datasets"))
        env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT),
               "TFDS_DATA_DIR": data_dir}  # fmt: skip
        ok = subprocess.run([sys.executable, "-m", "aejax.train", *SMALL, "--workdir", "run"],
                            cwd=tmp, env=env, capture_output=True, text=True)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        images = np.zeros((3, 28, 28), np.uint8)
        np.save(tmp / "x.npy", images)
        npy_with_header(tmp / "negative.npy", "{'descr': '|u1', 'fortran_order': False, "
                        "'shape': (-3, 28, 28), }")  # fmt: skip
        np.savez(tmp / "archive.npz", x=images)
        os.replace(tmp / "archive.npz", tmp / "archive.npy")
        os.mkfifo(tmp / "pipe.npy")
        (tmp / "outdir").mkdir()
        cases = [
            ("paths and names", "train", "--dataset", "~/no_such_dir", *SMALL[2:]),
            ("paths and names", "train", "--dataset", "x_missing.npy"),
            ("paths and names", "eval", "--workdir", "run", "--ood", "no_such_folder/"),
            ("paths and names", "eval", "--workdir", "run", "--ood", "uniform,~/new_images"),
            ("paths and names", "train", "--dataset", "fashion_mnist[:1000]"),
            ("paths and names", "train", "--dataset", "mnist:1.0.0"),
            ("paths and names", "train", "--distributed", *SMALL),
            ("paths and names", "train", "--arch", "conv", "--model", "depth=6"),
            ("untrusted arrays", "score", "--workdir", "run", "negative.npy"),
            ("untrusted arrays", "score", "--workdir", "run", "archive.npy"),
            ("untrusted arrays", "score", "--workdir", "run", "pipe.npy"),
            ("outputs", "score", "--workdir", "run", "x.npy", "--out", "outdir"),
            ("outputs", "score", "--workdir", "no_such_run", "x.npy"),
        ]
        rows = [{"class": c[0], **run(c[1], *c[2:], cwd=tmp, env=env)} for c in cases]
    for row in rows:
        print(row["exit"], row["command"], "->", row["line"], flush=True)
    lines = [
        "# Bad inputs and faults, as a user types them (`python experiments/bad_inputs.py`)",
        "",
        f"CPU: {cpu_name()}. Each command in a fresh process, in a folder holding a one-epoch "
        "dense run (`run`) and the files named; `~` is a fresh `HOME`. Passed: exit code 2, "
        "one `error:` line, no traceback. Files and folders without permissions are not "
        "among them: as root (these machines) they are read and written all the same; the "
        "tests make read-only and full filesystems with tmpfs (tests/test_faults.py).",
        "",
        f"Passed: {sum(r['passed'] for r in rows)} of {len(rows)}.",
        "",
        "| class | command | exit | last line printed |",
        "|---|---|---|---|",
        *(
            f"| {r['class']} | `{r['command']}` | {r['exit']} | {r['line'].replace('|', '/')} |"
            for r in rows
        ),  # fmt: skip
    ]
    write_results("bad_inputs", rows, lines)


if __name__ == "__main__":
    main()

"""docs/installation.md's pip commands, run as written, each in a fresh clone and venv.

    python experiments/installation.py            # every block's lines (downloads from PyPI)

For each ``pip install ...`` line of the page's "With pip" blocks: a fresh clone of this
repository's HEAD, a fresh virtual environment (``python -m venv``), the line run literally in
the clone, then what the line promises checked in that environment: the commands start
(``python -m aejax.train --help``), and each extra's packages import (``.[onnx]``: jax2onnx,
onnx, onnxruntime; ``.[docs]``: sphinx, myst_parser, sphinx_book_theme; ``.[dev]``: pytest,
ruff, skimage and both of those). ``.[cuda]`` and ``.[tpu]`` download gigabytes of GPU/TPU
libraries that cannot run here: pip resolves them (``--dry-run``) and the script says so.
The lock's two lines run as one step, in their order. Writes
experiments/results/installation.{md,json}.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, cpu_name, write_results

CHECKS = {  # what an extra's line promises, as a Python statement in the new environment
    "": "import aejax",
    "onnx": "import jax2onnx, onnx, onnxruntime",
    "docs": "import sphinx, myst_parser, sphinx_book_theme",
    "dev": "import pytest, ruff, skimage, jax2onnx, onnxruntime, sphinx, myst_parser",
}
RESOLVE_ONLY = ("cuda", "tpu")  # accelerators' wheels: resolved, not installed


def steps() -> list[list[str]]:
    """The "With pip" section's commands, one step per line, the lock's block as one step; a
    line that installs an installer (``pip install uv``) goes before each line after it."""
    text = (ROOT / "docs" / "installation.md").read_text()
    section = text.split("## With pip", 1)[1].split("\n## ", 1)[0]
    out = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        lines = [line.split("#")[0].strip() for line in block.splitlines()]
        lines = [line for line in lines if re.match(r"(uv )?pip install", line)]
        if any("--require-hashes" in line for line in lines):
            out.append(lines)
            continue
        first = [line for line in lines if line == "pip install uv"]
        out += [[*first, line] for line in lines if line not in first]
    return out


def extra(line: str) -> str:
    found = re.search(r'"\.\[(\w+)\]"', line)
    return found.group(1) if found else ""


def sh(command: str, cwd: Path, venv: Path) -> tuple[int, float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        ["bash", "-c", f"source {venv}/bin/activate && {command}"],
        cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    return result.returncode, time.perf_counter() - start, (result.stdout + result.stderr)[-2000:]


def run_step(lines: list[str], scratch: Path) -> dict:
    clone, venv = scratch / "aejax", scratch / "venv"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    name = "dev" if any("dev.lock" in line for line in lines) else extra(lines[-1])
    dry = name in RESOLVE_ONLY
    row = {"commands": lines, "extra": name, "resolved_only": dry, "steps": []}
    for line in lines:
        run = line.replace("pip install", "pip install --dry-run", 1) if dry else line
        code, seconds, tail = sh(run, clone, venv)
        row["steps"].append({"ran": run, "exit": code, "seconds": round(seconds, 1)})
        if code:
            row["failed"] = tail
            return row
    if not dry:
        checks = [f'python -c "{CHECKS[name]}"', "python -m aejax.train --help"]
        for check in checks:
            code, _, tail = sh(check, scratch, venv)  # outside the clone: the installed aejax
            row["steps"].append({"ran": check, "exit": code})
            if code:
                row["failed"] = tail
                return row
        _, _, versions = sh("pip list --format freeze", scratch, venv)
        row["versions"] = {
            k: v for k, v in (x.split("==") for x in versions.split() if "==" in x)
            if k.lower() in {"jax", "jaxlib", "flax", "aejax", "jax2onnx", "sphinx", "pytest"}
        }  # fmt: skip
    return row


def main() -> int:
    rows = []
    for lines in steps():
        with tempfile.TemporaryDirectory(prefix="aejax-install-") as scratch:
            print("$", " && ".join(lines), flush=True)
            rows.append(run_step(lines, Path(scratch)))
            print("  ->", "ok" if "failed" not in rows[-1] else rows[-1]["failed"], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    lines = [
        "# docs/installation.md's pip commands, run as written",
        "",
        f"`python experiments/installation.py` at {commit} on {cpu_name()}, Python "
        f"{sys.version.split()[0]}: each line in a fresh clone and a fresh venv, then its "
        "promise checked in that venv (the extra's packages import; `python -m aejax.train "
        "--help` runs). `cuda` and `tpu` are resolved by pip (`--dry-run`), not installed: "
        "their wheels are gigabytes of libraries for devices this machine lacks.",
        "",
        "| command | exit codes | seconds | checked | versions |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        ran = [s for s in row["steps"] if "pip install" in s["ran"]]
        checked = [s for s in row["steps"] if "pip install" not in s["ran"]]
        lines.append(
            f"| `{' && '.join(row['commands'])}` | {', '.join(str(s['exit']) for s in ran)}"
            f"{' (dry run)' if row['resolved_only'] else ''} | "
            f"{sum(s['seconds'] for s in ran):.0f} | "
            + (
                ", ".join(f"`{s['ran']}`: {s['exit']}" for s in checked)
                or ("failed: see the JSON" if "failed" in row else "resolved only")
            )
            + " | "
            + ", ".join(f"{k} {v}" for k, v in sorted(row.get("versions", {}).items()))
            + " |"
        )
    failed = [row for row in rows if "failed" in row]
    lines += ["", f"{len(rows) - len(failed)} of {len(rows)} steps succeeded."]
    write_results("installation", rows, lines)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed of `python -m aejax.train` against the Keras and PyTorch peers, on this machine, now.

    python experiments/bench.py                                # both archs, all peers
    python experiments/bench.py --archs dense --epochs 15 --repeats 3 --peers torch
    python experiments/bench.py --markdown experiments/results/speed.md   # also write the table

Every job is a whole process run one after another (never two at once), each started once
the machine is quiet; "foreign_cpu_s" is the CPU time other processes used meanwhile (~0 is a
clean timing). Prints one JSON line per job and per summary:

* aejax: seconds per epoch (training pass + validation pass over the 10k test images, as the
  peers time it), median and spread over the epochs after the first of every repeat; images/s;
  the first epoch's extra time (compile); and the whole command's wall time (imports, data,
  compile, every epoch, checkpoints, figures). Trains on all 60k images (--holdout 0), as the
  peers do.
* peers: the same, from the peer scripts in ../shared/bench/peers (see its README).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, history

PEERS_DIR = Path(os.environ.get("AEJAX_PEERS_DIR", ROOT.parent / "shared" / "bench" / "peers"))
PEER_VENVS = Path(os.environ.get("PEER_VENVS", Path.home() / ".peer-venvs"))
BATCH = {"dense": 256, "conv": 128}
PEER_JOBS = {  # name: (venv, script, extra arguments)
    "keras": ("keras", "keras_ae.py", []),
    "torch": ("torch", "torch_ae.py", []),
    "torch-channels-last": ("torch", "torch_ae.py", ["--channels-last"]),
}


def _busy_jiffies() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
    return busy, sum(fields)


def wait_until_quiet(max_wait_s: float = 600) -> None:
    """Until under 10% of the machine is busy over 3 s."""
    deadline = time.time() + max_wait_s
    while time.time() < deadline:
        b0, t0 = _busy_jiffies()
        time.sleep(3)
        b1, t1 = _busy_jiffies()
        if (b1 - b0) / max(t1 - t0, 1) < 0.10:
            return
    print("warning: the machine never went quiet", file=sys.stderr)


def run_timed(command: list[str], cwd: Path | None = None) -> dict:
    """Runs ``command``; returns its output, wall time and the CPU time others used."""
    wait_until_quiet()
    b0, _ = _busy_jiffies()
    start = time.perf_counter()
    usage0 = os.times()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    usage1 = os.times()
    b1, _ = _busy_jiffies()
    own = (usage1.children_user - usage0.children_user) + (
        usage1.children_system - usage0.children_system
    )
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    clock = os.sysconf("SC_CLK_TCK")
    return {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "wall_s": round(wall, 2),
        "foreign_cpu_s": round((b1 - b0) / clock - own, 1),
    }


def spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def bench_aejax(arch: str, epochs: int, repeats: int, extra: list[str]) -> dict:
    per_epoch, first_extra, walls, foreign, losses = [], [], [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as workdir:
            command = [
                sys.executable,
                "-m",
                "aejax.train",
                "--arch",
                arch,
                "--epochs",
                str(epochs),
                "--holdout",
                "0",
                "--workdir",
                workdir,
                *extra,
            ]
            job = run_timed(command, cwd=ROOT)
            epochs_run = history(Path(workdir))
        seconds = [h["epoch_seconds"] for h in epochs_run]
        per_epoch += seconds[1:]
        first_extra.append(seconds[0] - statistics.median(seconds[1:]))
        walls.append(job["wall_s"])
        foreign.append(job["foreign_cpu_s"])
        losses.append([round(h["val_loss"], 4) for h in epochs_run])
        devices = re.search(r"on (\d+ \w+ devices?)", job["stderr"])
    median = statistics.median(per_epoch)
    return {
        "job": "aejax",
        "arch": arch,
        "batch": BATCH[arch],
        "epochs": epochs,
        "repeats": repeats,
        "args": extra,
        "devices": devices.group(1) if devices else None,
        "sec_per_epoch": spread(per_epoch),
        "images_per_s": round(60000 / median),
        "first_epoch_extra_s": spread(first_extra),
        "command_wall_s": spread(walls),
        "foreign_cpu_s": max(foreign),
        "val_loss_per_epoch": losses,
    }


def bench_peer(name: str, arch: str, epochs: int, repeats: int) -> dict:
    venv, script, extra = PEER_JOBS[name]
    python = PEER_VENVS / venv / "bin" / "python"
    per_epoch, walls, foreign, summary = [], [], [], {}
    for _ in range(repeats):
        job = run_timed(
            [str(python), script, "--arch", arch, "--epochs", str(epochs), *extra], cwd=PEERS_DIR
        )
        seconds = [float(m) for m in re.findall(r"^epoch\s+\d+\s+([\d.]+) s", job["stdout"], re.M)]
        per_epoch += seconds[1:]
        walls.append(job["wall_s"])
        foreign.append(job["foreign_cpu_s"])
        summary = json.loads(job["stdout"].strip().splitlines()[-1])
    return {
        "job": name,
        "arch": arch,
        "batch": BATCH[arch],
        "epochs": epochs,
        "repeats": repeats,
        "sec_per_epoch": spread(per_epoch),
        "images_per_s": round(60000 / statistics.median(per_epoch)),
        "command_wall_s": spread(walls),
        "foreign_cpu_s": max(foreign),
        "final_val_loss": summary.get("final_val_loss"),
        "versions": {k: v for k, v in summary.items() if k in ("torch", "keras", "tf")},
    }


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import jax  # after the jobs' own imports: this process runs no JAX work

    return {
        "job": "machine",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def markdown(rows: list[dict]) -> str:
    info = next(r for r in rows if r["job"] == "machine")
    lines = [
        "# Speed: aejax vs Keras vs PyTorch (same machine, same sitting)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
        f"jax {info['jax']}. Written by `python experiments/bench.py --markdown ...` on "
        f"{time.strftime('%Y-%m-%d')}; raw JSON lines in `speed.jsonl`.",
        "Seconds per epoch = training pass over 60k + validation pass over 10k images, median "
        "over the epochs after the first (aejax: after compilation), min-max in brackets. "
        "Ratio = aejax / peer (lower is better).",
        "",
        "| arch (batch) | job | s/epoch median [min-max] | images/s | aejax / job | "
        "whole command (s) | epochs | val BCE after them |",
        "|---|---|---|---|---|---|---|---|",
    ]
    targets = [
        "",
        "Against the fastest peer (the speed issue's targets: dense <= 0.25, "
        "conv <= 0.67; the whole dense command < 0.5 of the Keras script's):",
        "",
    ]
    for arch in ("dense", "conv"):
        jobs = [r for r in rows if r.get("arch") == arch]
        ours = next((r for r in jobs if r["job"] == "aejax"), None)
        for r in jobs:
            s = r["sec_per_epoch"]
            ratio = f"{ours['sec_per_epoch']['median'] / s['median']:.2f}" if ours else ""
            loss = r.get("final_val_loss") or r.get("val_loss_per_epoch", [[None]])[0][-1]
            lines.append(
                f"| {arch} ({r['batch']}) | {r['job']} | {s['median']:.3f} [{s['min']:.3f}-"
                f"{s['max']:.3f}] | {r['images_per_s']:,} | {ratio if r is not ours else '1'} "
                f"| {r['command_wall_s']['median']:.1f} | {r['epochs']} | {loss} |"
            )
        peers = [r for r in jobs if r is not ours]
        if not ours or not peers:
            continue
        best = min(peers, key=lambda r: r["sec_per_epoch"]["median"])
        ratio = ours["sec_per_epoch"]["median"] / best["sec_per_epoch"]["median"]
        targets.append(f"- {arch}: {ratio:.2f} of {best['job']}'s s/epoch")
        keras = next((r for r in peers if r["job"] == "keras"), None)
        if arch == "dense" and keras:
            ratio = ours["command_wall_s"]["median"] / keras["command_wall_s"]["median"]
            targets.append(f"- dense whole command: {ratio:.2f} of the Keras script's wall time")
    lines += targets
    return "\n".join(lines) + "\n"


NOTES = "\n## Notes"


def write_markdown(path: Path, rows: list[dict]) -> None:
    """Writes the table to ``path``, keeping a hand-written ``## Notes`` section already there."""
    old = path.read_text() if path.exists() else ""
    notes = old[old.index(NOTES) :] if NOTES in old else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(rows) + notes)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--archs", nargs="+", default=["dense", "conv"])
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per run (default: 15 dense, 4 conv)"
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--peers", nargs="*", default=list(PEER_JOBS), choices=list(PEER_JOBS))
    p.add_argument("--aejax-args", default="", help="extra train options, e.g. '--cpu-devices 1'")
    p.add_argument("--jsonl", type=Path, help="also append the JSON lines to this file")
    p.add_argument("--markdown", type=Path, help="also write the table to this file")
    p.add_argument(
        "--table-from",
        type=Path,
        help="only write --markdown from the JSON lines "
        "of earlier runs (a file --jsonl wrote), running nothing",
    )
    args = p.parse_args()
    if args.table_from and not args.markdown:
        p.error("--table-from writes the table: give --markdown FILE")
    if args.table_from:
        rows = [json.loads(line) for line in args.table_from.read_text().splitlines()]
        machines = [r for r in rows if r["job"] == "machine"]
        rows = machines[-1:] + [r for r in rows if r["job"] != "machine"]
        write_markdown(args.markdown, rows)
        return 0
    rows = [machine()]
    print(json.dumps(rows[0]), flush=True)
    for arch in args.archs:
        epochs = args.epochs or (15 if arch == "dense" else 4)
        rows.append(bench_aejax(arch, epochs, args.repeats, args.aejax_args.split()))
        print(json.dumps(rows[-1]), flush=True)
        for peer in args.peers:
            if arch == "dense" and "channels-last" in peer:
                continue  # a layout for convolutions
            rows.append(bench_peer(peer, arch, epochs, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    if args.jsonl:
        args.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(args.jsonl, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    if args.markdown:
        write_markdown(args.markdown, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

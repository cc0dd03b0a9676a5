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
* peers: the same, from the peer scripts in experiments/peers (copies of
  ../shared/bench/peers, see its README, with ``--data`` added for other images).

Workloads: ``dense`` and ``conv`` on MNIST (60k training images); ``conv-rgb32``: the conv
net on 70k 32x32 RGB crops of scikit-learn's two sample photos (random places, sizes and
flips; ``.npy`` for aejax, its train/test rows by aejax's own split for the peers);
``dense-stream``: batches read from uint8 files on disk (aejax ``--stream``, its decoded
copy's memory maps; the peer ``--stream``, .npy memory maps); ``dense-ensemble8``: 8 members
in one vmapped step (aejax ``--ensemble 8``; the peer ``--ensemble 8``, torch.func's vmap).
aejax's whole command is timed twice: the first repeat with an empty compilation cache (a
first run), the others with the programs it kept (a repeated run); ``timings.json`` of each
gives the breakdown (imports, data, compile, epochs, checkpoints, plots).
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

from common import ROOT, cpu_name, history, rgb32_data

from aejax import xla

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

PEERS_DIR = ROOT / "experiments" / "peers"
PEER_VENVS = Path(os.environ.get("PEER_VENVS", Path.home() / ".peer-venvs"))
BATCH = {"dense": 256, "conv": 128}  # per model: aejax's and the peers' default batch
ARCH = {  # workload -> model
    "dense": "dense",
    "conv": "conv",
    "conv-rgb32": "conv",
    "dense-stream": "dense",
    "dense-ensemble8": "dense",
}
DEFAULT_EPOCHS = {"dense": 15, "conv": 4, "conv-rgb32": 3, "dense-stream": 8, "dense-ensemble8": 8}
# Options a workload adds to both aejax.train and the peer script.
FEATURE = {"dense-stream": ["--stream"], "dense-ensemble8": ["--ensemble", "8"]}
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


def run_timed(command: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    """Runs ``command``; returns its output, wall time and the CPU time others used."""
    wait_until_quiet()
    b0, _ = _busy_jiffies()
    start = time.perf_counter()
    usage0 = os.times()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
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


def workload_args(workload: str, data: dict) -> tuple[list[str], list[str]]:
    """The options of ``workload`` for aejax.train and for the peer scripts."""
    if workload == "conv-rgb32":
        return ["--arch", "conv", "--dataset", str(data["npy"])], ["--arch", "conv", "--data",
                                                                    str(data["npz"])]  # fmt: skip
    both = ["--arch", ARCH[workload], *FEATURE.get(workload, [])]
    return both, both


def bench_aejax(
    workload: str, epochs: int, repeats: int, extra: list[str], data: dict, job: str = "aejax"
) -> dict:
    per_epoch, first_extra, walls, foreign, losses, timings = [], [], [], [], [], []
    from aejax.data import cache

    cache_home = Path(tempfile.mkdtemp(prefix="aejax-bench-compile-cache-"))
    # The first repeat compiles (an empty cache: a first run); the others load its programs.
    # The decoded datasets stay where they are: a warm data cache for every repeat.
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home),
           "AEJAX_CACHE_DIR": str(cache.cache_root())}  # fmt: skip
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as workdir:
            command = [
                sys.executable,
                "-m",
                "aejax.train",
                *workload_args(workload, data)[0],
                "--epochs",
                str(epochs),
                "--holdout",
                "0",
                "--workdir",
                workdir,
                *extra,
            ]
            job_run = run_timed(command, cwd=ROOT, env=env)
            epochs_run = history(Path(workdir))
            timings.append(json.loads((Path(workdir) / "timings.json").read_text()))
        seconds = [h["epoch_seconds"] for h in epochs_run]
        per_epoch += seconds[1:]
        first_extra.append(seconds[0] - statistics.median(seconds[1:]))
        walls.append(job_run["wall_s"])
        foreign.append(job_run["foreign_cpu_s"])
        losses.append([round(h["val_loss"], 4) for h in epochs_run])
        devices = re.search(r"on (\d+ \w+ devices?)", job_run["stderr"])
        train_images = round(epochs_run[-1]["train_seconds"] * epochs_run[-1]["images_per_second"])
    median = statistics.median(per_epoch)
    return {
        "job": job,
        "arch": workload,
        "batch": BATCH[ARCH[workload]],
        "epochs": epochs,
        "repeats": repeats,
        "args": extra,
        "devices": devices.group(1) if devices else None,
        "sec_per_epoch": spread(per_epoch),
        "images_per_s": round(train_images / median),
        "first_epoch_extra_s": spread(first_extra),
        "command_wall_s": spread(walls[:1]),  # the first run: it compiles
        "command_wall_repeat_s": spread(walls[1:]) if len(walls) > 1 else None,
        "timings_first": timings[0],
        "timings_repeat": timings[-1] if len(timings) > 1 else None,
        "foreign_cpu_s": max(foreign),
        "val_loss_per_epoch": losses,
    }


def bench_peer(name: str, workload: str, epochs: int, repeats: int, data: dict) -> dict:
    venv, script, extra = PEER_JOBS[name]
    python = PEER_VENVS / venv / "bin" / "python"
    per_epoch, walls, foreign, summary = [], [], [], {}
    options = workload_args(workload, data)[1]
    for _ in range(repeats):
        job = run_timed(
            [str(python), script, *options, "--epochs", str(epochs), *extra], cwd=PEERS_DIR
        )
        seconds = [float(m) for m in re.findall(r"^epoch\s+\d+\s+([\d.]+) s", job["stdout"], re.M)]
        per_epoch += seconds[1:]
        walls.append(job["wall_s"])
        foreign.append(job["foreign_cpu_s"])
        summary = json.loads(job["stdout"].strip().splitlines()[-1])
    return {
        "job": name,
        "arch": workload,
        "batch": BATCH[ARCH[workload]],
        "epochs": epochs,
        "repeats": repeats,
        "sec_per_epoch": spread(per_epoch),
        "images_per_s": round(summary.get("train_images", 60000) / statistics.median(per_epoch)),
        "command_wall_s": spread(walls),
        "foreign_cpu_s": max(foreign),
        "final_val_loss": summary.get("final_val_loss"),
        "versions": {k: v for k, v in summary.items() if k in ("torch", "keras", "tf")},
    }


def machine() -> dict:
    import jax  # after the jobs' own imports: this process runs no JAX work

    return {
        "job": "machine",
        "cpu": cpu_name(),
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
        "Seconds per epoch = training pass + validation pass (MNIST: 60k + 10k images), median "
        "over the epochs after the first (aejax: after compilation), min-max in brackets. "
        "Ratio = aejax / job (lower is better). aejax's whole command: the first run (it "
        "compiles) / a repeated run (its programs from the compilation cache); both with the "
        "decoded data already cached.",
        "",
        "| workload (batch) | job | s/epoch median [min-max] | images/s | aejax / job | "
        "whole command (s) | epochs | val BCE after them |",
        "|---|---|---|---|---|---|---|---|",
    ]
    targets = ["", "Targets (issue 19), same sitting:", ""]
    for workload in ARCH:
        jobs = [r for r in rows if r.get("arch") == workload]
        ours = next((r for r in jobs if r["job"] == "aejax"), None)
        for r in jobs:
            s = r["sec_per_epoch"]
            ratio = f"{ours['sec_per_epoch']['median'] / s['median']:.2f}" if ours else ""
            loss = r.get("final_val_loss") or r.get("val_loss_per_epoch", [[None]])[0][-1]
            wall = f"{r['command_wall_s']['median']:.1f}"
            if r.get("command_wall_repeat_s"):
                wall += f" / {r['command_wall_repeat_s']['median']:.1f}"
            lines.append(
                f"| {workload} ({r['batch']}) | {r['job']} | {s['median']:.3f} [{s['min']:.3f}-"
                f"{s['max']:.3f}] | {r['images_per_s']:,} | {ratio if r is not ours else '1'} "
                f"| {wall} | {r['epochs']} | {loss} |"
            )
        peers = {r["job"]: r for r in jobs if not r["job"].startswith("aejax")}
        if not ours or not peers:
            continue
        per_epoch = ours["sec_per_epoch"]["median"]
        best = min(peers.values(), key=lambda r: r["sec_per_epoch"]["median"])
        targets.append(
            f"- {workload}: {per_epoch / best['sec_per_epoch']['median']:.2f} of the fastest "
            f"peer's ({best['job']}) s/epoch"
            + ("" if ARCH[workload] == "dense" else " (target <= 0.5 of torch-channels-last)")
        )
        keras = peers.get("keras")
        if workload == "dense" and keras and ours.get("command_wall_repeat_s"):
            k = keras["command_wall_s"]["median"]
            first = ours["command_wall_s"]["median"] / k
            again = ours["command_wall_repeat_s"]["median"] / k
            targets.append(
                f"- dense whole command: {first:.2f} (first run) / {again:.2f} (repeated run) "
                "of the Keras script's wall time (target <= 0.25)"
            )
    lines += targets + breakdown(rows)
    return "\n".join(lines) + "\n"


def breakdown(rows: list[dict]) -> list[str]:
    """Where aejax's whole command spends its time, by phase (its ``timings.json``)."""
    runs = [
        (f"{r['arch']}, {kind}", r[key])
        for r in rows
        if r["job"] == "aejax"
        for kind, key in (("first run", "timings_first"), ("repeated", "timings_repeat"))
        if r.get(key)
    ]
    if not runs:
        return []
    phases = list(dict.fromkeys(p for _, t in runs for p in t["seconds"]))
    lines = [
        "",
        "Whole command by phase (s; aejax's `timings.json`): start and imports, devices and "
        "config, data onto the devices, model initialisation, the first epoch's training "
        "(compiling, or loading the compiled programs), the other epochs', evaluation, "
        "checkpoints, metrics and TensorBoard records, plots:",
        "",
        "| run | " + " | ".join(p.replace("_", " ") for p in phases) + " | total |",
        "|---|" + "---|" * (len(phases) + 1),
    ]
    for label, t in runs:
        cells = [f"{t['seconds'].get(p, 0):.2f}" for p in phases]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {t['total']:.2f} |")
    return lines


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
    p.add_argument("--archs", nargs="+", default=list(ARCH), choices=list(ARCH))
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per run (default: 15 dense, 4 conv, 3 conv-rgb32)",
    )
    p.add_argument("--repeats", type=int, default=2, help="aejax: the first compiles")
    p.add_argument("--bf16", action="store_true", help="also conv with --compute-dtype bfloat16")
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
    data = {}
    if "conv-rgb32" in args.archs:
        data["npy"], data["npz"] = rgb32_data(Path(tempfile.gettempdir()) / "aejax-bench-rgb32")
        from aejax import data as aejax_data

        aejax_data.load(str(data["npy"]), "train")  # prepared and cached before any timing
    rows = [machine()]
    print(json.dumps(rows[0]), flush=True)
    for workload in args.archs:
        epochs = args.epochs or DEFAULT_EPOCHS[workload]
        extra = args.aejax_args.split()
        rows.append(bench_aejax(workload, epochs, args.repeats, extra, data))
        print(json.dumps(rows[-1]), flush=True)
        if args.bf16 and workload == "conv":
            bf16 = [*extra, "--compute-dtype", "bfloat16"]
            rows.append(bench_aejax(workload, epochs, 1, bf16, data, job="aejax-bf16"))
            print(json.dumps(rows[-1]), flush=True)
        for peer in args.peers:
            if ARCH[workload] == "dense" and "channels-last" in peer:
                continue  # a layout for convolutions
            if workload == "conv-rgb32" and peer != "torch-channels-last":
                continue  # the fastest peer only (and the Keras copy reads MNIST only)
            if workload in FEATURE and peer != "torch":
                continue  # the fastest dense peer, the one given these options
            rows.append(bench_peer(peer, workload, epochs, 1, data))
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

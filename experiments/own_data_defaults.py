"""What a user's own images get from aejax's defaults: folders of crops of real photos, trained
with no options as docs/own_images.md says, against the old default (15 epochs at the
tutorial's batch) and ten times its epochs.

    python experiments/own_data_defaults.py                  # every row (about an hour)
    python experiments/own_data_defaults.py --rows 300-rgb32  # one row (the others kept)
    python experiments/own_data_defaults.py --table-only      # the saved rows' table again
    python experiments/own_data_defaults.py --rows 100-grey32 --seeds 1 2  # training seeds

Each row is a folder of N PNG crops of scikit-image's ``chelsea`` photo (a cat on a rug;
squares of S to 3S pixels at random places, resized to S x S; grey rows converted by
Pillow), as ``--dataset FOLDER``. Three runs of ``python -m aejax.train --arch conv``:

* ``default``: no other option (the batch size and training length from the data);
* ``15 epochs``: ``--epochs 15 --batch-size 128``, what the defaults were before;
* ``150 epochs``: ten times that.

Each is evaluated with ``python -m aejax.eval`` (the default score and threshold) against
crops of three other photos (``coffee``, ``rocket``, ``astronaut``: near OOD) and the
synthetic sets ``uniform``, ``black``, ``patches`` and ``vflip``. The table gives the
optimizer steps, the training command's wall time (whole process, this machine), the
held-out BCE of the model kept, whether it said it converged, and the AUROCs. ``--seeds``
trains a row's three runs again with other ``--seed`` values (the same folders: the model's
initialisation and the order of its batches change), for rows whose comparison is within
the spread of one training; the main table shows seed 0, a second table every seed of a row
run with several. Writes experiments/results/own_data_defaults.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, cpu_name, crops, history, skimage_image, write_results
from PIL import Image

WORK = ROOT / "runs" / "own_data"
NORMAL = "chelsea"
OTHER_PHOTOS = ("coffee", "rocket", "astronaut")
SYNTHETIC = ("uniform", "black", "patches", "vflip")
SIZES = (100, 300, 1000, 3000)
SIDES = (32, 64)
MODES = ("rgb", "grey")
SETTINGS = {
    "default": [],
    "15 epochs": ["--epochs", "15", "--batch-size", "128"],
    "150 epochs": ["--epochs", "150", "--batch-size", "128"],
}


def folder(name: str, n: int, side: int, mode: str, seed: int) -> Path:
    """``n`` crops of scikit-image's ``name`` photo as PNG files (made once)."""
    out = WORK / "data" / f"{name}-{n}-{mode}{side}"
    done = out.with_suffix(".complete")  # beside: the folder holds images only
    if done.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    images = crops(skimage_image(name), n, side, np.random.default_rng(seed))
    for i, image in enumerate(images):
        picture = Image.fromarray(image)
        (picture.convert("L") if mode == "grey" else picture).save(out / f"{i:05d}.png")
    done.write_text("")
    return out


def timed(*command: str) -> tuple[float, str]:
    """``(wall seconds, stdout + stderr)`` of ``python -m aejax.TOOL ...``, run alone."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return time.perf_counter() - start, result.stdout + result.stderr


def row(n: int, side: int, mode: str, seed: int = 0) -> list[dict]:
    data = folder(NORMAL, n, side, mode, seed=0)
    others = [folder(name, 200, side, mode, seed=1) for name in OTHER_PHOTOS]
    ood = ",".join([*map(str, others), *SYNTHETIC])
    out = []
    suffix, seeded = (f"-seed{seed}", ["--seed", str(seed)]) if seed else ("", [])
    for setting, options in SETTINGS.items():
        workdir = WORK / "runs" / f"{data.name}-{setting.replace(' ', '')}{suffix}"
        if not (workdir / "eval" / "report.json").is_file():
            seconds, output = timed("aejax.train", "--arch", "conv", "--dataset", str(data),
                                    "--workdir", str(workdir), *options, *seeded)  # fmt: skip
            timed("aejax.eval", "--workdir", str(workdir), "--ood", ood)
            (workdir / "train_output.txt").write_text(output)
            (workdir / "train_seconds.txt").write_text(f"{seconds:.1f}\n")
        hist = history(workdir)
        report = json.loads((workdir / "eval" / "report.json").read_text())
        output = (workdir / "train_output.txt").read_text()
        best = hist[-1].get("stopped", {}).get("best_epoch", len(hist))
        aurocs = {entry["name"]: entry["auroc"] for entry in report["ood"].values()}
        out.append({
            "row": f"{n}-{mode}{side}", "cpu": cpu_name(), "images": n, "side": side, "mode": mode,
            "setting": setting, "seed": seed, "steps": hist[-1].get("steps"),
            "batch_size": json.loads((workdir / "config.json").read_text())["batch_size"],
            "epochs": len(hist), "kept_epoch": best,
            "train_seconds": float((workdir / "train_seconds.txt").read_text()),
            "holdout_bce": hist[best - 1]["holdout_loss"],
            "warned": "warning: the held-out loss was still falling" in output,
            "stopped": hist[-1].get("stopped", {}).get("reason", "epochs"),
            "auroc": aurocs,
        })  # fmt: skip
    runs = WORK / "runs"
    out[0]["worst_vs_150_epochs"] = worst_difference(
        runs / f"{data.name}-default{suffix}", runs / f"{data.name}-150epochs{suffix}"
    )
    return out


def scores(workdir: Path) -> dict[str, np.ndarray]:
    """The default score of each image ``aejax.eval`` scored, by set: ``"normal"`` (the
    run's own test split) and each OOD set, in the order of ``scores.csv``."""
    import csv

    normal = json.loads((workdir / "config.json").read_text())["dataset"]
    by: dict[str, list[float]] = {}
    with open(workdir / "eval" / "scores.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["dataset"] == normal:
                if r["split"] == "test":
                    by.setdefault("normal", []).append(float(r["score"]))
            else:
                by.setdefault(Path(r["dataset"]).name, []).append(float(r["score"]))
    return {name: np.asarray(v) for name, v in by.items()}


def worst_difference(a: Path, b: Path, draws: int = 2000, seed: int = 0) -> dict:
    """The worst AUROC over the OOD sets of run ``a`` minus that of run ``b``, and its 95%
    paired bootstrap interval: each draw resamples the test images and each OOD set's images
    (the same draw for both runs: they scored the same images).

    How far apart two runs' worst AUROCs may be by chance: the smallest folders test on a
    handful of images (7 of 100), where one image moves an AUROC by several hundredths."""
    rng = np.random.default_rng(seed)
    sa, sb = scores(a), scores(b)
    n0 = len(sa["normal"])
    w0 = rng.multinomial(n0, np.full(n0, 1 / n0), size=draws)  # draws x n0 counts
    worst_a = np.full(draws, np.inf)
    worst_b = np.full(draws, np.inf)
    point = {}
    for name in (k for k in sa if k != "normal"):
        n1 = len(sa[name])
        w1 = rng.multinomial(n1, np.full(n1, 1 / n1), size=draws)
        for s, worst, key in ((sa, worst_a, "a"), (sb, worst_b, "b")):
            # AUROC = P(OOD score > normal score) + ties / 2, for every pair at once.
            ood_NxM, normal_NxM = s[name][:, None], s["normal"][None, :]
            pairs = (ood_NxM > normal_NxM) + 0.5 * (ood_NxM == normal_NxM)
            np.minimum(worst, np.einsum("di,ij,dj->d", w1, pairs, w0) / (n1 * n0), out=worst)
            point[key] = min(point.get(key, np.inf), pairs.mean())
    low, high = np.percentile(worst_a - worst_b, [2.5, 97.5])
    return {"difference": float(point["a"] - point["b"]), "low": float(low), "high": float(high),
            "test_images": n0}  # fmt: skip


def memory(side: int = 256, n: int = 300, steps: int = 40) -> dict:
    """The peak RSS of ``python -m aejax.train --arch conv`` with the defaults on ``n`` RGB
    crops of ``side`` x ``side``: the default batch for them, ``steps`` optimizer steps
    (``AEJAX_MAX_STEPS``: memory peaks within the first steps), whole process."""
    data = folder(NORMAL, n, side, "rgb", seed=0)
    workdir = WORK / "runs" / f"{data.name}-memory"
    shutil.rmtree(workdir, ignore_errors=True)
    env = {**os.environ, "AEJAX_MAX_STEPS": str(steps)}
    command = [sys.executable, "-m", "aejax.train", "--arch", "conv", "--dataset", str(data),
               "--workdir", str(workdir)]  # fmt: skip
    # A fresh child's peak: ru_maxrss of RUSAGE_CHILDREN is the largest finished child's.
    probe = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    probe += "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", probe, *command], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    config = json.loads((workdir / "config.json").read_text())
    return {"cpu": cpu_name(), "images": n, "side": side, "batch_size": config["batch_size"],
            "steps": steps, "peak_rss_mb": round(int(out.stdout.split()[-1]) / 1024)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", help="comma-separated rows such as 300-rgb32 (default: all)")
    p.add_argument("--memory", action="store_true", help="only the peak RSS at 256x256")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (0)")
    p.add_argument("--note", default="", help="a line for the results (what else ran, ...)")
    p.add_argument("--table-only", action="store_true", help="no training: the saved rows' table")
    args = p.parse_args(argv)
    if args.memory:
        result = memory()
        (RESULTS / "own_data_memory.json").write_text(json.dumps(result, indent=1) + "\n")
        print(result)
        return
    wanted = set(args.rows.split(",")) if args.rows else None
    planned = [f"{n}-{m}{s}" for s in SIDES for m in MODES for n in SIZES]
    # The rows of earlier sittings are kept (each says its CPU): a sitting runs some rows.
    by_name: dict[tuple[str, int], list[dict]] = {}
    for r in saved_rows():
        by_name.setdefault((r["row"], r.setdefault("seed", 0)), []).append(r)
    for side in SIDES:
        for mode in MODES:
            for n in SIZES:
                name = f"{n}-{mode}{side}"
                if not args.table_only and (wanted is None or name in wanted):
                    for seed in args.seeds:
                        by_name[name, seed] = row(n, side, mode, seed)
    rows = [r for (name, seed) in sorted(by_name, key=lambda k: (planned.index(k[0]), k[1]))
            for r in by_name[name, seed]]  # fmt: skip
    missing = [name for name in planned if name not in {r["row"] for r in rows}]
    lines = markdown([r for r in rows if r["seed"] == 0]) + seeds_markdown(rows)
    if missing:
        lines += ["", f"Not run in this sitting: {', '.join(missing)}."]
    if args.note:
        lines += ["", args.note]
    write_results("own_data_defaults", rows, lines)
    example(WORK / "runs" / "chelsea-300-rgb32-default")


def saved_rows() -> list[dict]:
    path = RESULTS / "own_data_defaults.json"
    return json.loads(path.read_text()) if path.is_file() else []


def example(workdir: Path) -> None:
    """The docs' example run: its command's last lines and its figures, into results/."""
    if not workdir.is_dir():
        return
    lines = (workdir / "train_output.txt").read_text().splitlines()
    summary = [line for line in lines if line.startswith(("conv on", "warning:"))]
    command = f"$ python -m aejax.train --arch conv --dataset {workdir.name.rsplit('-', 1)[0]}/"
    text = "\n".join([command, *summary]) + "\n"
    (RESULTS / "own_data_defaults_run.txt").write_text(text.replace(f"{ROOT}/", ""))
    figures = RESULTS / "figures" / "own_data"
    figures.mkdir(parents=True, exist_ok=True)
    from aejax import plots

    # Drawn again from the run's metrics: the figure of today's plotting code.
    plots.loss_curve(history(workdir), figures / "loss.png", title=f"conv on {workdir.name}")
    recon = next((workdir / "eval").glob("reconstructions_chelsea*.png"))
    shutil.copy(recon, figures / "reconstructions.png")


def markdown(rows: list[dict]) -> list[str]:
    sets = [*(f"{name}-200-" for name in OTHER_PHOTOS), *SYNTHETIC]
    lines = [
        "# Own images with the defaults (`python experiments/own_data_defaults.py`)",
        "",
        f"CPU: {', '.join(sorted({r['cpu'] for r in rows}))}, 2 cores. "
        f"conv on folders of crops of scikit-image's `{NORMAL}`; "
        f"OOD: crops of {', '.join(OTHER_PHOTOS)} (200 each) and the synthetic "
        f"{', '.join(SYNTHETIC)}. `15 epochs` was the old default; `150 epochs` is ten times "
        "it. Steps: optimizer steps; seconds: the whole training command; held-out BCE: of "
        "the model kept; ends: `converged`, `ceiling` (the step ceiling) or `epochs` (the "
        "length asked for); warned: the command's still-improving warning. Last column: the "
        "default's worst AUROC minus the 150-epoch run's, with its 95% paired bootstrap "
        "interval over the test and OOD images (`worst_difference`) where the sitting that "
        "ran the row computed one.",
        "",
        *verdict(rows),
        "",
        "| images | setting | batch | steps | seconds | held-out BCE | ends | warned | "
        + " | ".join(s.rstrip("-") for s in sets)
        + " | worst | worst − 150 epochs [95% interval] |",
        "|---" * (10 + len(sets)) + "|",
    ]
    for r in rows:
        by = {next(s for s in sets if name.startswith(s)): v for name, v in r["auroc"].items()}
        aurocs = [by.get(s, float("nan")) for s in sets]
        lines.append(
            f"| {r['images']} {r['mode']} {r['side']}x{r['side']} | {r['setting']} | "
            f"{r['batch_size']} | {r['steps']:,} | {r['train_seconds']:.0f} | "
            f"{r['holdout_bce']:.4f} | {r['stopped']} | {'yes' if r['warned'] else 'no'} | "
            + " | ".join(f"{a:.3f}" for a in aurocs)
            + f" | {min(aurocs):.3f} | {interval(r, rows)} |"
        )
    return lines


def verdict(rows: list[dict]) -> list[str]:
    """How the default compares with ten times the old epochs, counted over the rows."""
    d = [(r["row"], difference(r, rows)) for r in rows if r["setting"] == "default"]
    d = [(name, x) for name, x in d if x is not None]
    behind = [f"{name} ({x['difference']:+.3f})" for name, x in d if x["difference"] < 0]
    with_interval = [(name, x) for name, x in d if "high" in x]
    surely = [name for name, x in with_interval if x["high"] < 0]
    chance = (
        f"; behind beyond chance (the whole interval below zero) on "
        f"{', '.join(surely) or 'none'} of the {len(with_interval)} rows with an interval"
        if with_interval
        else " (no row of these sittings has an interval)"
    )
    return [
        f"Worst AUROC of the default against `150 epochs`: as good or better on "
        f"{len(d) - len(behind)} of {len(d)} rows; behind on {', '.join(behind) or 'none'}"
        f"{chance}."
    ]


def difference(r: dict, rows: list[dict]) -> dict | None:
    """A default row's ``worst_vs_150_epochs``, or (a sitting that computed no interval) its
    worst AUROC minus the 150-epoch row's, alone."""
    if r["setting"] != "default":
        return None
    if "worst_vs_150_epochs" in r:
        return r["worst_vs_150_epochs"]
    other = [o for o in rows if (o["row"], o["setting"], o.get("seed", 0))
             == (r["row"], "150 epochs", r.get("seed", 0))]  # fmt: skip
    if not other:
        return None
    return {"difference": min(r["auroc"].values()) - min(other[0]["auroc"].values())}


def several_seeds(rows: list[dict]) -> list[dict]:
    """The folders trained with several seeds: for each, its seed-0 default row (``first``),
    the ``seeds``, each setting's ``worst`` AUROC per seed, the default's ``differences``
    from ``150 epochs`` per seed and their ``mean``."""
    seeds: dict[str, dict[int, dict[str, dict]]] = {}
    for r in rows:
        seeds.setdefault(r["row"], {}).setdefault(r.get("seed", 0), {})[r["setting"]] = r
    out = []
    for by_seed in (by for by in seeds.values() if len(by) > 1):
        order = sorted(by_seed)
        worst = {s: [min(by_seed[k][s]["auroc"].values()) for k in order] for s in SETTINGS}
        differences = [d - o for d, o in zip(worst["default"], worst["150 epochs"], strict=True)]
        out.append({"first": by_seed[order[0]]["default"], "seeds": order, "worst": worst,
                    "differences": differences, "mean": float(np.mean(differences))})  # fmt: skip
    return out


def seeds_markdown(rows: list[dict]) -> list[str]:
    """Rows trained with several seeds: each seed's worst AUROC per setting, and the default's
    difference from ``150 epochs`` averaged over the seeds."""
    several = several_seeds(rows)
    if not several:
        return []
    lines = [
        "",
        "## Rows trained with several seeds",
        "",
        "The same folders trained again with `--seed 1`, `--seed 2`, ...: each seed's worst "
        "AUROC per setting, and the default's worst minus the 150-epoch run's, its mean over "
        "the seeds last. These rows were re-run because the default was behind on them at "
        "seed 0 (a choice by that seed's result: the new seeds are unaffected by it).",
        "",
        "| images | seeds | default | 15 epochs | 150 epochs | default − 150 epochs, each seed "
        "| mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for folder in several:
        r, diffs = folder["first"], folder["differences"]
        lines.append(
            f"| {r['images']} {r['mode']} {r['side']}x{r['side']} | "
            + ", ".join(map(str, folder["seeds"]))
            + " | "
            + " | ".join(", ".join(f"{w:.3f}" for w in folder["worst"][s]) for s in SETTINGS)
            + " | "
            + ", ".join(f"{d:+.3f}" for d in diffs)
            + f" | **{folder['mean']:+.3f}** |"
        )
    return lines


def interval(r: dict, rows: list[dict]) -> str:
    d = difference(r, rows)
    if d is None:
        return ""
    if "low" not in d:
        return f"{d['difference']:+.3f}"
    return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


if __name__ == "__main__":
    sys.exit(main())

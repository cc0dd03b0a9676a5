"""Every number README.md and the docs quote, filled in from experiments/results/.

    python experiments/fill_numbers.py      # rewrites the generated blocks
    python experiments/fill_numbers.py --check   # exit 1 if any block differs (tests/test_docs.py)

README.md holds blocks between ``<!-- numbers: NAME -->`` and ``<!-- end numbers -->``; the
docs include ``docs/_generated/NAME.md``. Both are rendered here from the results files, so
a number is written by hand nowhere, and a re-run experiment changes the text with it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

from common import RESULTS, ROOT

GENERATED = ROOT / "docs" / "_generated"
MARKED = [ROOT / "README.md"]
BLOCK = re.compile(r"(<!-- numbers: (\S+) -->\n)(.*?)(<!-- end numbers -->)", re.S)
FAMILIES_NOT_TRANSFORMED = ("noise", "constant", "drawn", "photos", "digits", "dataset")


def load(name: str):
    return json.loads((RESULTS / name).read_text())


def speed_rows() -> dict:
    """``{workload: {job: row}}`` of the latest speed sitting, and ``machine``."""
    rows: dict = {}
    for line in (RESULTS / "speed.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["job"] == "machine":
            rows["machine"] = row
        else:
            rows.setdefault(row["arch"], {})[row["job"]] = row
    return rows


def machine() -> str:
    m = speed_rows()["machine"]
    return f"{m['cpu']}, {m['cores']} cores"


def ratio(aejax: float, peer: float) -> str:
    return f"{aejax / peer:.2f}x"


def speed() -> str:
    rows = speed_rows()
    lines = [
        f"Measured on {machine()}, jax {rows['machine']['jax']} (`experiments/results/"
        "speed.md`). Seconds per epoch: training pass plus validation pass, median after "
        "compilation; ratio: aejax's time over the peer's (lower is faster).",
        "",
        "| workload | aejax s/epoch | Keras | PyTorch | PyTorch channels-last |",
        "|---|---|---|---|---|",
    ]
    for workload, jobs in rows.items():
        if workload == "machine":
            continue
        ours = jobs["aejax"]["sec_per_epoch"]["median"]
        cells = []
        for peer in ("keras", "torch", "torch-channels-last"):
            theirs = jobs.get(peer, {}).get("sec_per_epoch", {}).get("median")
            cells.append(f"{theirs:g} s ({ratio(ours, theirs)})" if theirs else "-")
        lines.append(f"| {workload} | {ours:g} | " + " | ".join(cells) + " |")
    dense = rows["dense"]
    first, again = (
        dense["aejax"][k]["median"] for k in ("command_wall_s", "command_wall_repeat_s")
    )
    keras = dense["keras"]["command_wall_s"]["median"]
    lines += [
        "",
        f"The whole dense command (`python -m aejax.train --arch dense`, 15 epochs): {first:g} s "
        f"on a first run, {again:g} s repeated (its programs from the compilation cache), "
        f"against {keras:g} s for the Keras script: {ratio(first, keras)} and "
        f"{ratio(again, keras)}.",
    ]
    return "\n".join(lines)


def seed_parity() -> str:
    parity = load("seed_parity.json")
    lines = [
        "| model | Keras tutorial | Keras 3 / PyTorch, same sitting | aejax, seeds 0 / 1 / 2 |",
        "|---|---|---|---|",
    ]
    for arch, batch in (("dense", 256), ("conv", 128)):
        ref = parity["reference"][arch]
        ours = [r["val_loss"][-1] for r in parity["runs"]
                if r["arch"] == arch and r["protocol"].startswith("default")]  # fmt: skip
        lines.append(
            f"| {arch} (batch {batch}) | {ref['tutorial']['15']} | {ref['keras']['15']} / "
            f"{ref['torch']['15']} | {' / '.join(f'{v:.4f}' for v in ours)} |"
        )
    return "\n".join(lines)


def ood_general() -> dict:
    return load("ood_general.json")[0]


def default_worst(result: dict, runs: list[dict] | None = None) -> dict[str, float]:
    """The default score's worst AUROC per family over ``runs`` (all of them: grey and RGB)
    on the test split."""
    default = result["all_families_choice"]
    runs = result["runs"] if runs is None else runs
    families = list(runs[0]["report_family"][default])
    return {f: min(r["report_family"][default][f] for r in runs) for f in families}


def grey_and_rgb(result: dict) -> list[tuple[str, list[dict]]]:
    grey = [r for r in result["runs"] if r["dataset"] in ("mnist", "fashion_mnist")]
    rgb = [r for r in result["runs"] if r not in grey]
    return [(f"{len(grey)} MNIST/Fashion-MNIST", grey), (f"{len(rgb)} RGB", rgb)]


def run_count(result: dict) -> str:
    rgb = sum(r["dataset"] not in ("mnist", "fashion_mnist") for r in result["runs"])
    return f"{len(result['runs'])} runs ({len(result['runs']) - rgb} grey, {rgb} RGB)"


def ood_default() -> str:
    result = ood_general()
    lines = [
        "| left-out family | chosen on the other families | its worst AUROC on the family, "
        f"over the {run_count(result)} |",
        "|---|---|---|",
    ]
    for family, chosen in result["lofo_choice"].items():
        worst = min(r["report_family"][chosen][family] for r in result["runs"])
        note = " (reported, never chosen on)" if family == "transformed" else ""
        lines.append(f"| {family}{note} | `{chosen}` | {worst:.4f} |")
    lines += [
        "",
        f"Chosen on every family but `transformed`: `{result['all_families_choice']}`, "
        "aejax's default.",
    ]
    return "\n".join(lines)


def ood_failures() -> str:
    result = ood_general()
    default = result["all_families_choice"]
    worst = default_worst(result)
    failing = sorted((f for f in worst if worst[f] < 0.95), key=worst.get)
    lines = [
        f"`{default}`'s worst AUROC per family over the {run_count(result)}: "
        + ", ".join(f"{f} {worst[f]:.4f}" for f in worst)
        + f". Below 0.95: {', '.join(failing) or 'none'}.",
        "",
        "| run | " + " | ".join(worst) + " |",
        "|---|" + "---|" * len(worst),
    ]
    for r in result["runs"]:
        values = [r["report_family"][default][f] for f in worst]
        lines.append(
            f"| {r['arch']}/{r['dataset']} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
        )
    return "\n".join(lines)


def own_images() -> str:
    rows = load("own_images.json")
    lines = [
        f"On {rows[0]['cpu']}, 2 cores; s/epoch after the first, training and test pass; "
        "whole commands with their peak memory (`experiments/results/own_images.md`).",
        "",
        "| images | batch | aejax s/epoch | PyTorch s/epoch | ratio | `aejax.train` (first "
        "run) | again (programs cached) | `aejax.eval` | `aejax.score` of 300 | PyTorch script |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        commands = [
            r[k] for k in ("train_command", "eval_command", "score_command", "torch_command")
        ]
        again = r.get("train_again_peak_rss_mb")
        cells = [f"{c['seconds']:g} s, {c['peak_rss_mb']:,} MB" for c in commands]
        cells.insert(1, f"{again:,} MB" if again else "")
        lines.append(
            f"| {r['images']} RGB, {r['size']}x{r['size']}, `depth={r['depth']}` | "
            f"{r.get('batch', '')} | "
            f"{r['aejax_sec_per_epoch']:g} | {r['torch_channels_last_sec_per_epoch']:g} | "
            f"{r['ratio']:.2f}x | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def experiment(name: str):
    """The experiment script ``name`` as a module (its own table code; imported by path: this
    module's functions carry the scripts' names)."""
    spec = importlib.util.spec_from_file_location(name, RESULTS.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_class() -> str:
    """docs/ood_scores.md: the one-class table's means beside the published rows."""
    rows = load("one_class.json")
    one_class = experiment("one_class")
    table = one_class.table({one_class.key(r): r for r in rows})
    lines = [line for line in table if line.startswith("|") or line.startswith("## ")]
    return "\n".join(
        ["One class normal, the whole test split scored; AUROC (%) per class and mean "
         "(`experiments/results/one_class.md`, on " + rows[0]["cpu"] + ").", ""]
        + [line.replace("## ", "\n**") + ("**\n" if line.startswith("## ") else "")
           for line in lines]
    )  # fmt: skip


def conv_roofline() -> str:
    rows = load("conv_roofline.json")
    ceiling = rows[0]["matmul_gflops"]
    lines = [
        f"On {rows[0]['cpu']}, 2 cores, 300 RGB images, the s/epoch of own_images.md's table "
        "(`experiments/results/conv_roofline.md`). Nominal GFLOP: the "
        "net's 3x3 convolutions, forward and backward for the training images and forward for "
        "the test images, counted from its layers. This CPU's ceiling, a 4096x4096 float32 "
        f"matrix product on both cores: {ceiling['torch']:.0f} GFLOP/s in PyTorch, "
        f"{ceiling['xla']:.0f} in XLA under aejax's flags.",
        "",
        "| images | nominal GFLOP an epoch | aejax GFLOP/s | PyTorch channels-last GFLOP/s "
        "| half PyTorch's time needs |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}x{r['size']}, `depth={r['depth']}`, batch {r['batch']} | "
            f"{r['nominal_gflop_per_epoch']:,.0f} | {r['aejax_gflops']:.0f} | "
            f"{r['torch_gflops']:.0f} | {r['half_torch_gflops']:.0f} GFLOP/s, "
            f"{100 * r['half_torch_of_ceiling']:.0f}% of the ceiling |"
        )
    return "\n".join(lines)


def own_data_defaults() -> str:
    """docs/own_images.md: a real run's last lines, and the defaults against the old ones."""
    every_seed = load("own_data_defaults.json")
    rows = [r for r in every_seed if r.get("seed", 0) == 0]  # the table's runs
    run = (RESULTS / "own_data_defaults_run.txt").read_text().rstrip()
    lines = [
        "A run with the defaults, on 300 crops at 32x32 (its last lines):",
        "",
        f"```text\n{run}\n```",
        "",
        f"On {rows[0]['cpu']}, 2 cores; seconds: the whole training command; worst: the "
        "lowest AUROC over the three other photos and the synthetic sets "
        "(`experiments/results/own_data_defaults.md` has each).",
        "",
        "| images | default: steps, seconds, ends | worst AUROC: default | 15 epochs | "
        "150 epochs |",
        "|---|---|---|---|---|",
    ]
    by_row: dict[str, dict] = {}
    for r in rows:
        by_row.setdefault(r["row"], {})[r["setting"]] = r
    for settings in by_row.values():
        d = settings["default"]
        worst = [min(settings[s]["auroc"].values()) for s in ("default", "15 epochs", "150 epochs")]
        lines.append(
            f"| {d['images']} {d['mode']} {d['side']}x{d['side']} | {d['steps']:,}, "
            f"{d['train_seconds']:.0f} s, {d['stopped']}{' (warned)' if d['warned'] else ''} | "
            + " | ".join(f"{w:.3f}" for w in worst)
            + " |"
        )
    several = experiment("own_data_defaults").several_seeds(every_seed)
    if several:
        means = [
            f"{f['first']['images']} {f['first']['mode']} {f['first']['side']}x"
            f"{f['first']['side']} {f['mean']:+.3f}"
            for f in several
        ]
        lines += [
            "",
            f"The rows where the default was behind at seed 0, trained again with other seeds "
            f"({len(several[0]['seeds'])} in all): the default's worst AUROC minus the "
            f"150-epoch run's, mean over the seeds: {', '.join(means)}.",
        ]
    memory = load("own_data_memory.json")
    lines += [
        "",
        f"At {memory['side']}x{memory['side']} RGB the default batch is "
        f"{memory['batch_size']} images, and `python -m aejax.train --arch conv` with the "
        f"defaults peaks at {memory['peak_rss_mb']:,} MB RSS (whole process, "
        "`experiments/results/own_data_memory.json`).",
    ]
    return "\n".join(lines)


def stopping_protocol() -> str:
    """docs/own_images.md: the stopping rule and the protocol that chose it."""
    return (RESULTS / "stopping_protocol.md").read_text().split("\n", 2)[2].rstrip()


def transform_head() -> str:
    """docs/ood_scores.md: whether the protocol offers the head (ood_transform_head.md's
    section on it)."""
    text = (RESULTS / "ood_transform_head.md").read_text()
    section = text.split("## Is the head offered?", 1)[1].split("\n## ", 1)[0]
    return section.split("\n", 1)[1].strip()


def pyod_compare() -> str:
    """docs/python_api.md: aejax's detector beside PyOD's AutoEncoder."""
    return (RESULTS / "pyod_compare.md").read_text().split("\n", 2)[2].rstrip()


def quickstart() -> str:
    timing = load("quickstart.json")
    lines = (RESULTS / "quickstart.txt").read_text().rstrip().splitlines()
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    if len(epochs) > 3:  # the first two epochs and the last: the rest is more of the same
        lines[epochs[2] : epochs[-1]] = ["..."]
    text = "\n".join(lines)
    seconds = " and ".join(f"{s:g} s" for s in timing["commands_seconds"])
    return (
        f"```text\n{text}\n```\n\n(On {timing['cpu']}: the two commands took {seconds} after "
        "set-up; `experiments/results/quickstart.txt`.)"
    )


def headline() -> str:
    """README's results table: seed parity, speed against the peers, OOD."""
    rows, parity, result = speed_rows(), load("seed_parity.json"), ood_general()
    ours = {arch: [r["val_loss"][-1] for r in parity["runs"]
                   if r["arch"] == arch and r["protocol"].startswith("default")]
            for arch in ("dense", "conv")}  # fmt: skip
    tutorial = {arch: parity["reference"][arch]["tutorial"]["15"] for arch in ours}
    seconds = {
        (workload, job): rows[workload][job]["sec_per_epoch"]["median"]
        for workload, job in (("dense", "aejax"), ("dense", "torch"), ("conv", "aejax"),
                              ("conv", "torch-channels-last"))
    }  # fmt: skip
    dense_ratio = ratio(seconds["dense", "aejax"], seconds["dense", "torch"])
    conv_ratio = ratio(seconds["conv", "aejax"], seconds["conv", "torch-channels-last"])
    default = result["all_families_choice"]

    def worst_of(runs):
        return default_worst(result, runs)

    return "\n".join([
        "| what | aejax | reference or peer |",
        "|---|---|---|",
        "| dense, MNIST test BCE after 15 epochs (seeds 0/1/2) | "
        f"{' / '.join(f'{v:.4f}' for v in ours['dense'])} | Keras tutorial {tutorial['dense']} |",
        f"| conv, the same | {' / '.join(f'{v:.4f}' for v in ours['conv'])} | Keras tutorial "
        f"{tutorial['conv']} |",
        f"| dense, s/epoch | {seconds['dense', 'aejax']:g} | PyTorch "
        f"{seconds['dense', 'torch']:g} ({dense_ratio}) |",
        f"| conv, s/epoch | {seconds['conv', 'aejax']:g} | PyTorch channels-last "
        f"{seconds['conv', 'torch-channels-last']:g} ({conv_ratio}) |",
        *(
            f"| OOD, `{default}`: worst AUROC over the {label} runs, on each family left out of "
            f"the choice | {', '.join(f'{f} {v:.2f}' for f, v in worst_of(runs).items())} | - |"
            for label, runs in grey_and_rgb(result)
        ),
        "",
        f"Speed measured on {machine()}, every peer in the same sitting.",
    ])  # fmt: skip


RENDER = {
    "quickstart": quickstart,
    "own_images": own_images,
    "conv_roofline": conv_roofline,
    "own_data_defaults": own_data_defaults,
    "stopping_protocol": stopping_protocol,
    "pyod_compare": pyod_compare,
    "one_class": one_class,
    "transform_head": transform_head,
    "speed": speed,
    "seed_parity": seed_parity,
    "ood_default": ood_default,
    "ood_failures": ood_failures,
    "headline": headline,
}


def updated() -> dict[Path, str]:
    """``{file: its text with every block rendered}``, for the files that would change."""
    out = {}
    for name, render in RENDER.items():
        path = GENERATED / f"{name}.md"
        text = render() + "\n"
        if not path.is_file() or path.read_text() != text:
            out[path] = text
    for path in MARKED:
        old = path.read_text()
        new = BLOCK.sub(lambda m: f"{m[1]}{RENDER[m[2]]()}\n{m[4]}", old)
        if new != old:
            out[path] = new
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only say what would change")
    args = parser.parse_args()
    changes = updated()
    for path, text in changes.items():
        if args.check:
            print(f"{path.relative_to(ROOT)} differs from experiments/results/", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 1 if args.check and changes else 0


if __name__ == "__main__":
    sys.exit(main())

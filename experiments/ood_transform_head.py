"""``ood_general.py``'s families, before and after the self-supervised head: the reference runs
trained without and with ``--transform-head``, and the leave-one-family-out protocol choosing
between them.

    python experiments/ood_transform_head.py           # the grey reference runs
    python experiments/ood_transform_head.py --rgb     # and ood_general's three RGB runs

For each of dense and conv on MNIST and on Fashion-MNIST (15 epochs, default options, seed 0)
two runs: ``runs/ood/<arch>-<dataset>`` (as ``ood_general.py`` trains it) and
``runs/ood/<arch>-<dataset>-transforms`` (the same with ``--transform-head``), scored on
``ood_general.py``'s families and sets (:func:`ood_general.families`, 2,000 images a set).
With ``--rgb`` also ``ood_general.py``'s three RGB runs (:func:`ood_general.rgb_specs`: conv
on 32x32 crops of scikit-learn's photos, dense and conv on a microscope image's crops, a folder
of PNG files), whose worst families (``transformed``, ``photos``) were the weakest in
``ood_general.md``; their training length comes from the data (early stopping), as a user's.

The protocol (:mod:`protocol`, as in ``ood_general.py``): a candidate is a score of the runs
without the head (``joint``) or of the runs with it (``joint@head``); for each family, the
candidate with the best worst-case held-out AUROC over the *other* families and every
(architecture, dataset) pair is chosen, then reported on the left-out family against the test
split; ``transformed`` is reported, never chosen on. So the protocol decides whether the
default becomes a model trained with the head, without seeing the family it is judged on.
Writes experiments/results/ood_transform_head.{json,md}.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time

import ood_general
import protocol
from common import OOD_RUNS, RESULTS, cpu_name, train, write_results

from aejax import data

RUNS = [(arch, dataset) for dataset in ("mnist", "fashion_mnist") for arch in ("dense", "conv")]
HEAD = "@head"  # a score of the runs trained with the head
SHOWN = ("joint", "transform", "typ-transform", "knn", "bce")


def scored(arch: str, dataset: str, head: bool, label: str, test_images, family_sets, **train_at):
    suffix = "-transforms" if head else ""
    workdir = OOD_RUNS / f"{arch}-{label}{suffix}"
    start = time.perf_counter()
    train("--arch", arch, "--dataset", dataset, *(["--transform-head"] if head else []),
          workdir=workdir)  # fmt: skip
    seconds = time.perf_counter() - start
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    epoch_seconds = [h["epoch_seconds"] for h in history[1:]]
    run = ood_general.scored_run(arch, label, workdir, None, test_images, family_sets)
    run["head"] = head
    run["train_seconds"] = round(seconds, 1)
    run["sec_per_epoch"] = round(sorted(epoch_seconds)[len(epoch_seconds) // 2], 3)
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rgb", action="store_true", help="also ood_general's three RGB runs")
    p.add_argument("--render", action="store_true", help="only re-write the markdown")
    args = p.parse_args()
    path = RESULTS / "ood_transform_head.json"
    if args.render:
        (result,) = json.loads(path.read_text())
        result.update(decide(result["runs"]))
        write_results("ood_transform_head", [result], markdown(result))
        return 0
    runs = []
    for arch, dataset in RUNS:
        test_images = data.load(dataset, "test")[0]
        family_sets = ood_general.families(dataset, test_images)
        for head in (False, True):
            runs.append(scored(arch, dataset, head, dataset, test_images, family_sets))
    for arch, name, dataset, extra in ood_general.rgb_specs() if args.rgb else []:
        test_images = data.load(dataset, "test")[0]
        family_sets = ood_general.rgb_families(test_images, *extra)
        for head in (False, True):
            runs.append(scored(arch, dataset, head, name, test_images, family_sets))
    result = {"cpu": cpu_name(), **decide(runs), "runs": runs}
    write_results("ood_transform_head", [result], markdown(result))
    return 0


def decide(runs: list[dict]) -> dict:
    """The protocol twice: its candidates the scores of the runs without the head only, and
    those of both (``score@head``: of the runs trained with it). Comparing the two on the
    left-out families is the outer loop of a nested selection: it judges each way of choosing
    on families neither saw, so it may decide whether the head is offered at all."""
    families = list(runs[0]["sets"])
    chosen_on = [f for f in families if f not in ood_general.NEVER_CHOSEN_ON]
    # One selection row per (architecture, dataset): its scores without the head, and with it.
    pairs: dict[tuple, dict] = {}
    for r in runs:
        row = pairs.setdefault((r["arch"], r["dataset"]), {})
        constant = set(r["constant"])
        for score, by_family in r["selection_family"].items():
            if score not in constant:
                row[score + (HEAD if r["head"] else "")] = by_family
    common = set.intersection(*(set(row) for row in pairs.values()))
    out = {}
    for suffix, offered in (("", common), ("_without", {s for s in common if HEAD not in s})):
        selection = [{k: v for k, v in row.items() if k in offered} for row in pairs.values()]
        out["lofo_choice" + suffix] = protocol.leave_one_family_out(
            selection, families, ood_general.NEVER_CHOSEN_ON
        )
        out["all_families_choice" + suffix] = protocol.choose_score(selection, chosen_on)
    return out


def reported(runs: list[dict], pairs, choice: str, family: str) -> list[float]:
    """The test-split AUROC on ``family`` of the candidate ``choice`` (``score`` or
    ``score@head``), one per (architecture, dataset) of ``pairs``."""
    score, head = choice.removesuffix(HEAD), choice.endswith(HEAD)
    return [_run(runs, a, d, head)["report_family"][score][family] for a, d in pairs]


def lofo_worst(result: dict, choices: dict[str, str]) -> dict[str, float]:
    """Per left-out family, the worst test-split AUROC over the runs of the score chosen
    without it."""
    runs = result["runs"]
    pairs = {(r["arch"], r["dataset"]) for r in runs}
    return {family: min(reported(runs, pairs, c, family)) for family, c in choices.items()}


def markdown(result: dict) -> list[str]:
    runs = result["runs"]
    families = list(runs[0]["sets"])
    pairs = sorted({(r["arch"], r["dataset"]) for r in runs}, key=lambda p: (p[1], p[0]))
    rgb = sorted({d for _, d in pairs} - {d for _, d in RUNS})
    lines = [
        "# The self-supervised head on ood_general's families",
        "",
        "Written by `python experiments/ood_transform_head.py"
        + (" --rgb" if rgb else "")
        + "` (its docstring has the protocol):",
        "the reference runs (15 epochs, default options, seed 0)"
        + (f" and the RGB runs ({', '.join(rgb)}: training length from the data)" if rgb else "")
        + " trained without and with",
        "`--transform-head`, scored on `ood_general.py`'s families; AUROC of the test split",
        "against each family's worst set. Run on " + result["cpu"] + ".",
        "",
        *decision(result),
        "## Leave one family out, choosing between the runs without and with the head",
        "",
        "| left-out family | chosen on the others | "
        + " | ".join(f"{a}/{d}" for a, d in pairs)
        + " | worst |",
        "|---|---|" + "---|" * (len(pairs) + 1),
    ]
    for family in families:
        choice = result["lofo_choice"][family]
        lines.append(_row(f"{family} | `{choice}`", reported(runs, pairs, choice, family)))
    lines += [
        "",
        f"Chosen on every family but `transformed`: `{result['all_families_choice']}` "
        f"(`{HEAD}`: the runs trained with the head).",
        "",
        "## Before and after, per family (test split)",
        "",
        "| run | score | " + " | ".join(families) + " | worst |",
        "|---|---|" + "---|" * (len(families) + 1),
    ]
    for a, d in pairs:
        for head in (False, True):
            run = _run(runs, a, d, head)
            for score in SHOWN:
                if score not in run["report_family"] or (score.endswith("transform") and not head):
                    continue
                by = run["report_family"][score]
                name = f"{a}/{d}" + (" + head" if head else "")
                lines.append(_row(f"{name} | `{score}`", [by[f] for f in families]))
    lines += [
        "",
        "## Training cost of the head (same sitting)",
        "",
        "| run | s/epoch without | s/epoch with | ratio |",
        "|---|---|---|---|",
    ]
    for a, d in pairs:
        without, with_ = (_run(runs, a, d, h) for h in (False, True))
        ratio = with_["sec_per_epoch"] / without["sec_per_epoch"]
        lines.append(
            f"| {a}/{d} | {without['sec_per_epoch']:.2f} | {with_['sec_per_epoch']:.2f} | "
            f"{ratio:.2f}x |"
        )
    return lines + [""]


def decision(result: dict) -> list[str]:
    """Whether the head is offered: the two ways of choosing, judged on left-out families."""
    from aejax import AutoencoderDetector

    ways = {"without the head": "_without", "the head offered": ""}
    worst = {way: lofo_worst(result, result["lofo_choice" + s]) for way, s in ways.items()}
    judged = [f for f in worst["without the head"] if f not in ood_general.NEVER_CHOSEN_ON]
    overall = {way: min(w[f] for f in judged) for way, w in worst.items()}
    offered = overall["the head offered"] > overall["without the head"]
    default = inspect.signature(AutoencoderDetector).parameters["transform_head"].default
    lines = [
        "## Is the head offered? The protocol with and without it",
        "",
        "Each way of choosing, judged on the families it did not see (the worst test-split",
        f"AUROC over these {len({(r['arch'], r['dataset']) for r in result['runs']})} runs of"
        " the score chosen without the family; the default score itself is chosen on",
        "all of `ood_general.py`'s runs):",
        "",
        "| left-out family | " + " | ".join(f"{way}: chosen, worst" for way in ways) + " |",
        "|---|" + "---|" * len(ways),
    ]
    for family in worst["without the head"]:
        cells = [
            f"`{result['lofo_choice' + s][family]}` {worst[way][family]:.4f}"
            for way, s in ways.items()
        ]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Worst over the left-out families but `transformed`: "
        + ", ".join(f"{way} **{v:.4f}**" for way, v in overall.items())
        + f". So the protocol {'offers' if offered else 'does not offer'} the head: by it, the"
        + f" default {'would be' if offered else 'is not'} a model trained with it. aejax's"
        + f" default today: `transform_head={default}`."
        + (
            " The two disagree, by "
            f"{abs(overall['the head offered'] - overall['without the head']):.4f} of AUROC on "
            "the worst family: switching aejax's default (every model then trains with the "
            "head) is open work, not done."
            if offered != default
            else ""
        ),
        "",
    ]
    return lines


def _run(runs: list[dict], arch: str, dataset: str, head: bool) -> dict:
    (run,) = [r for r in runs if (r["arch"], r["dataset"], r["head"]) == (arch, dataset, head)]
    return run


def _row(label: str, values: list[float]) -> str:
    """A table row: ``label``'s cells, the values, their worst."""
    return f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {min(values):.4f} |"


if __name__ == "__main__":
    raise SystemExit(main())

"""What ``aejax.eval`` writes: ``report.json`` (every number), ``scores.csv`` (every
image's every score), figures (reconstructions, score histograms, ROC curves), TensorBoard
events; the report as the terminal shows it (:func:`format_table`). It computes nothing:
:func:`aejax.eval.evaluate` did."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from aejax import board, files, ood, plots, thresholds
from aejax.eval import Evaluation, ScoredSet


def write(result: Evaluation, out_dir: Path) -> list[str]:
    """Writes report.json, scores.csv and the figures to ``out_dir``; returns their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    score = result.report["score"]
    write_scores_csv(out_dir / "scores.csv", [result.test, result.holdout, *result.outs], score)
    result.report["files"] = [
        "report.json",
        "scores.csv",
        *write_figures(out_dir, result),
    ]
    files.write_json(out_dir / "report.json", result.report)
    write_board(result, out_dir)
    return result.report["files"]


def write_board(result: Evaluation, out_dir: Path) -> None:
    """The evaluation in the run's TensorBoard events, at the checkpoint's step: each set's
    score histogram, the AUROCs, the ROC figure."""
    from PIL import Image

    workdir = result.report["workdir"]
    score, step = result.report["score"], result.report["checkpoint_step"]
    events = board.Board(workdir)
    sets = [result.test, result.holdout, *result.outs]
    events.histograms(step, {f"eval/{score}/{s.label}-{s.split}": s.scores[score] for s in sets})
    events.scalars(
        step, {f"eval/auroc/{m['name']}": m["auroc"] for m in result.report["ood"].values()}
    )
    with Image.open(out_dir / "roc.png") as roc:
        events.images(step, "eval/roc", np.asarray(roc.convert("RGB"), np.float32) / 255)
    events.close()


def write_scores_csv(path: Path, sets: list[ScoredSet], score: str) -> None:
    with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "split", "index", "label", "score", *ood.names()])
        for s in sets:
            for i, label in enumerate(s.labels):
                writer.writerow(
                    [
                        s.name,
                        s.split,
                        i,
                        int(label),
                        f"{s.scores[score][i]:.7g}",
                        *(f"{s.scores[k][i]:.7g}" for k in ood.names()),
                    ]
                )


def file_stem(label: str) -> str:
    """A file-name part for a set: its label, slashes as '-' (``emnist/letters``)."""
    return label.replace("/", "-")


def write_figures(out_dir: Path, result: Evaluation) -> list[str]:
    """Reconstructions of each set, a score histogram of each OOD set beside the test split's,
    and the ROC curves, from what :func:`aejax.eval.evaluate` computed."""
    report, test, outs = result.report, result.test, result.outs
    score, threshold = report["score"], report["threshold"]
    files = []
    for label, (images, recon) in result.reconstructions.items():
        path = plots.reconstruction_grid(
            images / 255.0,
            recon,
            out_dir / f"reconstructions_{file_stem(label)}.png",
            title=f"{label}: inputs (top), reconstructions",
        )
        files.append(path.name)
    for s in outs:
        path = plots.score_histogram(
            test.scores[score],
            s.scores[score],
            out_dir / f"hist_{file_stem(s.label)}.png",
            in_name=test.label,
            out_name=s.label,
            score=score,
            threshold=threshold,
        )
        files.append(path.name)
    files.append(
        plots.roc_curves(
            result.roc,
            out_dir / "roc.png",
            title=f"{report['config']['arch']} on {test.label}, {score} score",
        ).name
    )
    return files


def format_table(report: dict, workdir: Path) -> str:
    ind = report["in_distribution"]
    lines = [
        f"{report['config']['arch']} on {ind['name']}, checkpoint {report['checkpoint_step']}"
        f" ({workdir}; {report['devices']}); score: {report['score']}; positive class: OOD",
        f"{ind['name']} test BCE {ind['test_bce']:.4f} (training reported "
        f"{ind['training_reported_test_bce']:.4f})",
        f"threshold {thresholds.Threshold.from_dict(report['threshold_rule']).describe()}",
        f"it flags {ind['test_flagged']:.1%} of {ind['name']} test (the FPR achieved)",
        f"{'OOD set':<16}{'AUROC':>8}{'AUPR-out':>10}{'AUPR-in':>9}{'FPR@95TPR':>11}"
        f"{'detected':>10}   AUROC with bce / mse",
    ]
    for name, m in report["ood"].items():
        by = report["auroc_by_score"][name]
        lines.append(
            f"{m['name']:<16}{m['auroc']:>8.4f}{m['aupr_out']:>10.4f}{m['aupr_in']:>9.4f}"
            f"{m['fpr_at_95_tpr']:>11.4f}{m['detection_rate']:>10.1%}   "
            f"{by['bce']:.4f} / {by['mse']:.4f}"
        )
    return "\n".join(lines)


def format_detector(report: dict) -> str:
    """What the evaluation did to the run's detector (the score and threshold ``aejax.score``
    and ``aejax.export`` use), in one line."""
    found = report["detector"]
    saved = thresholds.Threshold.from_dict(found["saved"]).describe()
    if not found["evaluated_is_saved"]:
        return (
            f"evaluated in memory; the run's detector is unchanged: {saved} "
            "(--save-detector makes the evaluated one the run's)"
        )
    if found["before"] is None:
        return f"fitted the run's detector (aejax.score and aejax.export use it): {saved}"
    if found["before"] != found["saved"]:
        before = thresholds.Threshold.from_dict(found["before"]).describe()
        return f"the run's detector is now the evaluated one (it was: {before})"
    return "evaluated the run's detector (aejax.score and aejax.export use it)"

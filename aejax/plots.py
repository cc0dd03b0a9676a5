"""Figures: what people would rather see than read. Every function writes one PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aejax.files import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def loss_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training and validation loss per epoch (each key of ``history`` ending in ``loss``);
    beside them, where the history has it, the watched held-out KL on a log scale (what
    early stopping judges: :mod:`aejax.stopping`), and the epoch a stopped run kept."""
    with_kl = "watched_kl" in history[-1]
    fig, axes = plt.subplots(1, 1 + with_kl, figsize=(6 + 5 * with_kl, 4), squeeze=False)
    epochs = [h["epoch"] for h in history]
    style = {"marker": "o", "ms": 3} if len(history) <= 60 else {}
    ax = axes[0, 0]
    for key in [k for k in history[-1] if k.endswith("loss")]:
        ax.plot(epochs, [h.get(key, np.nan) for h in history], label=key, **style)
    ax.set(xlabel="epoch", ylabel="binary cross-entropy", title=title)
    if with_kl:
        kl = axes[0, 1]
        kl.plot(epochs, [h.get("watched_kl", np.nan) for h in history], color="C3",
                label="held-out KL", **style)  # fmt: skip
        kl.set_yscale("log")
        kl.set(xlabel="epoch", ylabel="held-out KL (BCE less the images' entropy)",
               title="what training can still remove")  # fmt: skip
    kept = history[-1].get("stopped", {}).get("best_epoch")
    for a in axes.flat:
        if kept:
            a.axvline(kept, color="grey", ls="--", lw=1, label=f"kept: epoch {kept}")
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()  # the second panel's label clear of the first
    return _save(fig, path)


def reconstruction_grid(
    originals: np.ndarray, reconstructions: np.ndarray, path: str | Path, title: str = ""
) -> Path:
    """Originals over their reconstructions, one column per image (as in the Keras tutorial)."""
    n = len(originals)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.2, 2.7), squeeze=False)
    for row, images in enumerate((originals, reconstructions)):
        for col in range(n):
            ax = axes[row, col]
            ax.imshow(np.asarray(images[col]).squeeze(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("output")
    fig.suptitle(title)
    return _save(fig, path)


def _bins(all_scores: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Histogram bins over all the scores; logarithmic when they span > 2 decades."""
    merged = np.concatenate([np.ravel(s) for s in all_scores])
    lo, hi = float(merged.min()), float(merged.max())
    if lo > 0 and hi / lo > 100:
        return np.geomspace(lo, hi, 60), True
    return np.linspace(lo, hi if hi > lo else lo + 1e-6, 60), False


def score_histogram(
    in_scores: np.ndarray,
    out_scores: np.ndarray,
    path: str | Path,
    *,
    in_name: str,
    out_name: str,
    score: str,
    threshold: float | None = None,
) -> Path:
    """In-distribution vs OOD score distributions, with the threshold if given.

    Bars are fractions of each set (not densities), which stay comparable on a log x-axis.
    """
    bins, log_x = _bins([in_scores, out_scores])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for scores, name in ((in_scores, f"{in_name} (in)"), (out_scores, f"{out_name} (OOD)")):
        scores = np.ravel(scores)
        ax.hist(
            scores, bins=bins, weights=np.full(scores.size, 1 / scores.size), alpha=0.55, label=name
        )
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=f"{score} score (higher = more anomalous)", ylabel="fraction of images")
    _legend_outside(ax)
    return _save(fig, path)


def _legend_outside(ax) -> None:
    """The legend right of the axes, never over the data (the figure grows to hold it)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize="small")


def roc_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str = ""
) -> Path:
    """ROC curves, OOD positive: ``{name: (fpr, tpr, auroc)}``."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auroc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set(
        xlabel="false positive rate (in-distribution flagged)",
        ylabel="true positive rate (OOD flagged)",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    _legend_outside(ax)
    return _save(fig, path)


def anomaly_map(
    image_HxWxC: np.ndarray,
    reconstruction_HxWxC: np.ndarray,
    anomaly_HxW: np.ndarray,
    path: str | Path,
    title: str = "",
) -> Path:
    """The input, its reconstruction and its anomaly map (nats per pixel, its own colour bar)
    side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.6))
    grey = image_HxWxC.shape[-1] == 1
    for ax, picture, name in zip(
        axes[:2],
        (image_HxWxC / 255.0, reconstruction_HxWxC),
        ("input", "reconstruction"),
        strict=True,
    ):
        ax.imshow(picture.squeeze(-1) if grey else picture, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    shown = axes[2].imshow(anomaly_HxW, cmap="inferno", vmin=0)
    axes[2].set_title("anomaly (KL, nats)", fontsize=9)
    fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)

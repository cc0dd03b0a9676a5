"""Figures: what people would rather see than read. Every function writes one PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Training and validation loss per epoch (each key of ``history`` ending in ``loss``)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    for key in [k for k in history[-1] if k.endswith("loss")]:
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", ms=3, label=key)
    ax.set(xlabel="epoch", ylabel="binary cross-entropy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray,
                        path: str | Path, title: str = "") -> Path:
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

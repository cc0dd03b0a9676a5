"""Does an image's score depend on the batch it is scored in? The first n of 600
Fashion-MNIST images scored as one batch of n, against the same images scored in one batch
of 600, by a one-epoch dense MNIST detector on one CPU device: for each output, how many of
the batch sizes tried change any bit, and the largest relative difference.

    python experiments/batch_invariance.py  # experiments/results/batch_invariance.{md,json}

Why it matters: the commands split images into chunks and over their CPU devices, a user's
program or an exported model may batch them otherwise; bit-for-bit agreement between them
needs every per-image computation to be independent of the batch's shape.
"""

from __future__ import annotations

import tempfile

import jax
import numpy as np
from common import cpu_name, write_results

from aejax import RunConfig, data, train_and_evaluate, xla
from aejax.detector import _detect, outputs
from aejax.eval import run_detector

xla.apply_flags()  # XLA:CPU's speed flags, as the commands compute (aejax.xla)

SIZES = (*range(1, 20), 63, 64, 100, 255, 256, 487, 488, 512, 599)


def main() -> None:
    images, _ = data.load("fashion_mnist", "test[:600]")
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(RunConfig(arch="dense", epochs=1), workdir)
        detector, _ = run_detector(workdir)
        fitted = detector.fitted()

        def scored(x):
            with xla.full_precision():
                return np.asarray(_detect(detector.state, fitted, x, detector.threshold.score))

        whole = scored(images)
        changed = {name: [] for name in outputs()}
        largest = dict.fromkeys(outputs(), 0.0)
        for n in SIZES:
            for name, want, got in zip(outputs(), whole[:, :n], scored(images[:n]), strict=True):
                if (want != got).any():
                    changed[name].append(n)
                    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-30)
                    largest[name] = max(largest[name], float(rel.max()))
    rows = [{"cpu": cpu_name(), "jax": jax.__version__, "output": name, "sizes": len(SIZES),
             "sizes_changed": len(changed[name]), "changed_at": changed[name],
             "largest_relative": largest[name]} for name in outputs() if name != "ood"]  # fmt: skip
    for row in rows:
        print(row["output"], row["sizes_changed"], f"{row['largest_relative']:.1e}", flush=True)
    lines = [
        "# An image's score and the shape of the batch it is scored in",
        "",
        f"`python experiments/batch_invariance.py` on {cpu_name()}, jax {jax.__version__}: the "
        "first n of 600 Fashion-MNIST test images scored by a one-epoch dense MNIST detector in "
        f"one batch of n, against the same images in one batch of 600, for {len(SIZES)} sizes n "
        f"from 1 to 599, on one CPU device with aejax's compiler options.",
        "",
        "| output | batch sizes that change a bit | largest relative difference |",
        "|---|---|---|",
        *(
            f"| {r['output']} | {r['sizes_changed']} of {r['sizes']} | "
            f"{r['largest_relative']:.1e} |"
            for r in rows
        ),  # fmt: skip
        "",
        "Where sizes change bits, an image's score depends on its batch's shape in the last "
        "bits of float32: XLA:CPU sums an image's pixels (and a code's coordinates) in an "
        "order that depends on the shape. The commands, the Python API and an exported model "
        "then agree to float32's precision (about 1e-6 relative), not bit for bit, whenever "
        "they batch the images differently (chunks, device counts). Verdicts can differ only "
        "for an image whose score is that close to the threshold.",
    ]
    write_results("batch_invariance", rows, lines)


if __name__ == "__main__":
    main()

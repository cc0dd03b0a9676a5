"""Scoring new images end to end: aejax.score on files, its maps, and the exported detector
reproducing its CSV in a process that never imports aejax.

    python experiments/score_demo.py        # uses runs/dense-mnist (trains and evaluates it
                                            # with the CLIs' defaults if it is missing)

Writes experiments/results/score_demo.{md,json} and three of the maps to
experiments/results/figures/score_demo/.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, run_aejax, write_results
from PIL import Image

WORKDIR = ROOT / "runs" / "dense-mnist"

# What README's loader does, on the same images: only jax, numpy and Pillow.
LOADER = r"""
import json, pathlib, sys
import numpy as np
from jax import export
from PIL import Image

folder = pathlib.Path(sys.argv[1])
meta = json.loads((folder / "metadata.json").read_text())
detect = export.deserialize((folder / meta["artifacts"]["jax"]["file"]).read_bytes())
digit = np.asarray(Image.open(sys.argv[2]).convert("L"))[None, :, :, None]
images = np.concatenate([digit, np.load(sys.argv[3])])
out = detect.call(images)
json.dump({"score": np.asarray(out["score"]).tolist(), "ood": np.asarray(out["ood"]).tolist(),
           "aejax_imported": any(m.startswith("aejax") for m in sys.modules)},
          open(sys.argv[4], "w"))
"""


def main() -> int:
    from aejax import data

    if not (WORKDIR / "checkpoints").is_dir():
        run_aejax("train", "--arch", "dense", "--workdir", str(WORKDIR))
    run_aejax("eval", "--workdir", str(WORKDIR), "--out", str(WORKDIR / "eval"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        digits, _ = data.load("mnist", "test[:1]")
        clothes, _ = data.load("fashion_mnist", "test[:8]")
        Image.fromarray(digits[0, ..., 0]).save(tmp / "some_digits.png")
        np.save(tmp / "fashion.npy", clothes)
        inputs = ["some_digits.png", "fashion.npy", "--out", "scores.csv", "--maps", "maps"]
        command = [sys.executable, "-m", "aejax.score", "--workdir", str(WORKDIR), *inputs]
        scored = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=True)
        rows = list(csv.DictReader(open(tmp / "scores.csv")))
        run_aejax("export", "--workdir", str(WORKDIR), "--out", str(tmp / "detector"))
        meta = json.loads((tmp / "detector" / "metadata.json").read_text())
        env = {"PATH": "/usr/bin:/bin", "XLA_FLAGS": meta["artifacts"]["jax"]["xla_flags"]}
        subprocess.run(
            [sys.executable, "-c", LOADER, str(tmp / "detector"), "some_digits.png",
             "fashion.npy", "loaded.json"], cwd=tmp, env=env, check=True,
        )  # fmt: skip
        loaded = json.loads((tmp / "loaded.json").read_text())
        figures = RESULTS / "figures" / "score_demo"
        figures.mkdir(parents=True, exist_ok=True)
        for name in ("00000_some_digits.png", "00001_fashion-0.png", "00005_fashion-4.png"):
            shutil.copy(tmp / "maps" / name, figures / name)

    csv_scores = np.array([float(r["score"]) for r in rows], np.float32)
    same_bits = bool(np.array_equal(np.array(loaded["score"], np.float32), csv_scores))
    same_verdicts = loaded["ood"] == [r["ood"] == "1" for r in rows]
    result = {
        "summary": scored.stderr.strip().splitlines(),
        "rows": [{k: r[k] for k in ("source", "score", "p_value", "ood")} for r in rows],
        "exported_same_float32_bits": same_bits,
        "exported_same_verdicts": same_verdicts,
        "loader_imported_aejax": loaded["aejax_imported"],
    }
    lines = [
        "# Scoring new images: aejax.score, its maps, the exported detector",
        "",
        "Written by `python experiments/score_demo.py` on `runs/dense-mnist` (15 epochs, the",
        "CLIs' defaults): one MNIST digit as a PNG and eight Fashion-MNIST images as a `.npy`.",
        "",
        "```text",
        "$ python -m aejax.score --workdir runs/dense-mnist some_digits.png fashion.npy "
        "--out scores.csv --maps maps",
        *result["summary"],
        "```",
        "",
        "| source | score | p_value | ood |",
        "|---|---|---|---|",
        *(f"| {r['source']} | {r['score']} | {r['p_value']} | {r['ood']} |" for r in rows),
        "",
        "The detector written by `python -m aejax.export`, loaded by README's loader in a fresh "
        f"process (aejax imported: {loaded['aejax_imported']}; `XLA_FLAGS` from metadata.json):"
        f" the same float32 scores as the CSV: {same_bits}; the same verdicts: {same_verdicts}.",
        "",
        "Maps (input, reconstruction, per-pixel KL):",
        "",
        *(f"![](figures/score_demo/{n})" for n in ("00000_some_digits.png",
                                                   "00001_fashion-0.png", "00005_fashion-4.png")),
    ]  # fmt: skip
    write_results("score_demo", [result], lines)
    return 0 if same_bits and same_verdicts and not loaded["aejax_imported"] else 1


if __name__ == "__main__":
    sys.exit(main())

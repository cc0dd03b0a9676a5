"""Scoring new images with a run: what ``python -m aejax.score`` asks for
(:func:`score_images`), and the files it writes (a CSV row per image, anomaly maps)."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np

from aejax import data, files, inputs, ood, parallel, run, thresholds
from aejax.detector import Detector


@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    """Images to score (files, folders, ``.npy``: :mod:`aejax.inputs`) with checkpoint
    ``step`` (default latest) of the run in ``workdir`` (default the most recent one), on
    score ``score`` with threshold ``policy`` (default: the run's); the CSV to ``out``
    (None: returned as text), anomaly maps to ``maps``."""

    inputs: tuple[str, ...]
    workdir: Path | None = None
    step: int | None = None
    score: str | None = None
    policy: thresholds.Policy | None = None
    out: Path | None = None
    maps: Path | None = None
    devices: parallel.Devices = parallel.Devices()


@dataclasses.dataclass
class ScoreResult:
    detector: Detector  # with the threshold the verdicts were given by
    given: inputs.Inputs
    detected: dict[str, np.ndarray]  # score, p_value, ood and every score, per image
    workdir: Path
    csv_text: str | None  # the CSV, where no file was asked for


def score_images(request: ScoreRequest) -> ScoreResult:
    """Scores the images: every score, p-value and verdict per image; writes the CSV and
    the maps asked for."""
    workdir = request.workdir or run.latest_workdir()
    # One device unless told: the batches are then the exported detector's, which gives the
    # same bits on the same batch (aejax.exporting).
    placement = parallel.setup(request.devices, splits_well=False, batch_size=1)
    found = Detector.load(workdir, request.step, placement)
    policy = request.policy
    held_out = policy if policy is not None and policy.name != "contamination" else None
    if request.score or held_out:
        found = found.with_threshold(held_out, request.score)
    # The run's own preprocessing is applied without a word; other conversions are warned
    # (a folder's or array's run converts every image to its channels).
    silent = {"resize"} if found.config.image_size else set()
    if found.config.channels or data.is_local(found.config.dataset):
        silent.add("channels")
    given = inputs.read(request.inputs, found.image_shape, silent=frozenset(silent))
    batch = placement.batch if placement.size > 1 else None
    detected = found.detect(given.images, batch_sharding=batch)
    if policy is not None and policy.name == "contamination":  # the top of these scores
        found = found.with_threshold(policy, scored=detected["score"])
        detected["ood"] = found.threshold.flags(detected["score"])
    text = csv_text(given.sources, detected)
    if request.out is not None:
        request.out.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(request.out, text)
    if request.maps is not None:
        write_maps(request.maps, found, given)
    return ScoreResult(found, given, detected, workdir, None if request.out else text)


def csv_text(sources: list[str], detected: dict) -> str:
    """One row per image: source, score, p_value, ood, every score (9 digits: float32
    round-trips exactly)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["source", "score", "p_value", "ood", *ood.names()])
    for i, source in enumerate(sources):
        writer.writerow(
            [
                source,
                f"{detected['score'][i]:.9g}",
                f"{detected['p_value'][i]:.9g}",
                int(detected["ood"][i]),
                *(f"{detected[k][i]:.9g}" for k in ood.names()),
            ]
        )
    return text.getvalue()


def map_name(index: int, source: str) -> str:
    """``00012_digit.png`` for ``some/dir/digit.png``, ``00013_batch-7.png`` for
    ``batch.npy[7]``: numbered, so that two files of one name never overwrite each other."""
    # Only an array's row ends in "]" ("file.npy[7]"); a path may hold brackets of its own.
    path, _, item = source[:-1].rpartition("[") if source.endswith("]") else (source, "", "")
    return f"{index:05d}_{Path(path).stem}{'-' + item if item else ''}.png"


def write_maps(out_dir: Path, found: Detector, given: inputs.Inputs) -> None:
    """Each image, its reconstruction and its anomaly map, as one PNG per image."""
    from aejax import plots

    maps = found.maps(given.images)
    for i, source in enumerate(given.sources):
        plots.anomaly_map(
            given.images[i],
            maps["reconstruction"][i],
            maps["anomaly"][i],
            out_dir / map_name(i, source),
            title=source,
        )

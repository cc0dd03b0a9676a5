"""Scoring new images with a run: what ``python -m aejax.score`` asks for
(:func:`score_images`), and the files it writes (a CSV row per image, anomaly maps)."""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import io
import os
import tempfile
from pathlib import Path
from typing import TextIO

import numpy as np
import tqdm

from aejax import core, data, files, inputs, ood, parallel, run, thresholds
from aejax import detector as detection
from aejax import eval as evaluation
from aejax.detector import Detector
from aejax.errors import AejaxError


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
    runs: Detector  # the run's detector (the same, unless another score or threshold was asked)
    fitted_now: bool  # the run had no detector, and its default one was fitted and saved now
    sources: int  # how many images were scored
    converted: dict[str, int]  # "32x32x3" -> how many images of that shape were converted
    score: np.ndarray  # the run's score of each image [N]
    ood: np.ndarray  # each image's verdict [N]
    workdir: Path
    csv_text: str | None  # the CSV, where neither a file nor a stream was asked for
    restarted: bool = False  # a killed job's unfinished CSV was found, and scoring began anew


def score_images(request: ScoreRequest, sink: TextIO | None = None) -> ScoreResult:
    """Scores the images a chunk at a time (:func:`aejax.inputs.chunks`, memory bounded by
    :attr:`aejax.detector.Detector.chunk_rows` images whatever their number): every score,
    p-value and verdict per image, written as CSV rows to ``request.out`` (atomically: a
    killed job leaves an unfinished file beside it, which the next one starts over from),
    else to ``sink``, else returned as text; the maps asked for."""
    if request.out is not None:
        check_writable_file(request.out, "--out")  # before any image is scored
    workdir = request.workdir or run.latest_workdir()
    # One device unless told: the batches are then the exported detector's, which gives the
    # same bits on the same batch (aejax.export).
    placement = parallel.setup(request.devices, splits_well=False, batch_size=1)
    runs, fitted_now = evaluation.run_detector(workdir, request.step, placement)
    found, policy = runs, request.policy
    held_out = policy if policy is not None and policy.name != "contamination" else None
    if request.score or held_out:
        found = found.with_threshold(held_out, request.score)
    # The run's own preprocessing is applied without a word; other conversions are warned
    # (a folder's or array's run converts every image to its channels).
    silent = {"resize"} if found.config.image_size else set()
    if found.config.channels or data.is_local(found.config.dataset):
        silent.add("channels")
    every = inputs.items(list(request.inputs))
    batch = placement.batch if placement.size > 1 else None
    contamination = policy is not None and policy.name == "contamination"
    unfinished = request.out and _unfinished(request.out)
    restarted = bool(unfinished and unfinished.exists())
    scores, verdicts, converted = [], [], collections.Counter()
    with contextlib.ExitStack() as stack:
        if request.out is not None:
            request.out.parent.mkdir(parents=True, exist_ok=True)
            rows_file = stack.enter_context(open(unfinished, "w+", newline=""))
        elif contamination:  # held until the verdicts are known, then copied with them
            rows_file = stack.enter_context(tempfile.TemporaryFile("w+", newline=""))
        else:
            rows_file = sink if sink is not None else io.StringIO()
        writer = csv.writer(rows_file)
        writer.writerow(header())
        progress = stack.enter_context(
            tqdm.tqdm(total=len(every), unit="img", disable=None, leave=False)
        )
        # The detector's own chunks (at most its chunk_rows, evened out): memory holds that
        # many decoded images whatever the inputs' number, and the chunks are those
        # Detector.detect cuts all the images into, the last padded alike, so their scores
        # are those of scoring them at once, to the bit (XLA:CPU's elementwise loops round a
        # batch's last elements by another path).
        rows = core.chunk_size(len(every), found.chunk_rows)
        chunks = inputs.prefetched(
            inputs.chunks(every, found.image_shape, rows, silent=frozenset(silent))
        )

        def write(given: inputs.Inputs, start: int, scored) -> None:
            detected = scored()  # waits for the chunk's scores
            converted.update(given.converted)
            scores.append(detected["score"])
            verdicts.append(detected["ood"])
            rows_file.write(csv_lines(given.sources, detected))
            if request.maps is not None:
                write_maps(request.maps, found, given, first=start)
            progress.update(len(given.sources))

        # A chunk's rows are written while the next chunk is scored (XLA computes without
        # the GIL that formatting the rows holds).
        in_flight = None
        for start, given in zip(range(0, len(every), rows), chunks, strict=True):
            started = (given, start, found.detect_async(given.images, batch, rows=rows))
            if in_flight is not None:
                write(*in_flight)
            in_flight = started
        write(*in_flight)
        score, ood_N = np.concatenate(scores), np.concatenate(verdicts)
        text = None
        if contamination:  # the top of these scores: known once every image is scored
            found = found.with_threshold(policy, scored=score)
            ood_N = found.threshold.flags(score)
            rows_file.seek(0)
            if request.out is not None:
                with files.atomic_path(unfinished) as tmp, open(tmp, "w", newline="") as f:
                    _copy_with_verdicts(rows_file, f, ood_N)
            else:
                target = sink if sink is not None else io.StringIO()
                _copy_with_verdicts(rows_file, target, ood_N)
                text = target.getvalue() if sink is None else None
        elif isinstance(rows_file, io.StringIO):
            text = rows_file.getvalue()
    if request.out is not None:
        os.replace(unfinished, request.out)
    return ScoreResult(
        found, runs, fitted_now, len(every), dict(converted), score, ood_N, workdir,
        text if sink is None and request.out is None else None, restarted,
    )  # fmt: skip


def header() -> list[str]:
    """The CSV's columns: the detection's (every score registered now: a notebook may
    register its own) after ``source``."""
    return ["source", *detection.outputs()]


def check_writable_file(path: Path, option: str) -> None:
    """One clear error, before any work, when ``path`` cannot become a file this process
    writes: it is a folder, or its nearest existing folder cannot be written to."""
    path = Path(path)
    if path.is_dir():
        raise AejaxError(
            f"{option} {path} is a folder: give the path of the file to write, such as "
            f"{path / 'scores.csv'}"
        )
    folder = next((p for p in path.absolute().parents if p.exists()), None)
    if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        raise AejaxError(
            f"{option} {path}: cannot write in {folder}; give a path in a folder you can write to"
        )


def _unfinished(out: Path) -> Path:
    """Where the rows are written until every image is scored."""
    return out.with_name(f"{out.name}.unfinished")


def csv_lines(sources: list[str], detected: dict) -> str:
    """One CSV line per image: source, score, p_value, ood, every score (9 digits: float32
    round-trips exactly), as :mod:`csv`'s writer would write them."""
    columns = [detected[k].tolist() for k in ("score", "p_value")]
    scores = [detected[k].tolist() for k in ood.names()]
    verdicts = detected["ood"].astype(np.uint8).tolist()
    # One %-format per row, not csv.writer over a string per value: the rows are formatted
    # holding the GIL, which the decoding thread needs (experiments/results/score_scale.md).
    line = "%s,%.9g,%.9g,%d" + ",%.9g" * len(scores) + "\r\n"
    rows = zip(map(_csv_field, sources), *columns, verdicts, *scores, strict=True)
    return "".join([line % row for row in rows])


def _csv_field(text: str) -> str:
    """``text`` as :mod:`csv` writes a field: quoted where it holds a comma, a quote or a line
    break (csv's QUOTE_MINIMAL with its default dialect), else as it is."""
    if not any(c in text for c in ',"\r\n'):
        return text
    field = io.StringIO()
    csv.writer(field).writerow([text])  # its own line end, which decides its quoting too
    return field.getvalue().removesuffix("\r\n")


def _copy_with_verdicts(rows: TextIO, out: TextIO, ood_N: np.ndarray) -> None:
    """The CSV of ``rows`` to ``out``, a row at a time, its ``ood`` column ``ood_N``."""
    reader, writer = csv.reader(rows), csv.writer(out)
    writer.writerow(next(reader))
    for row, flag in zip(reader, ood_N, strict=True):
        writer.writerow([*row[:3], int(flag), *row[4:]])


def csv_text(sources: list[str], detected: dict) -> str:
    """The CSV of :func:`csv_lines`, with its header, as text."""
    text = io.StringIO()
    csv.writer(text).writerow(header())
    text.write(csv_lines(sources, detected))
    return text.getvalue()


def map_name(index: int, source: str) -> str:
    """``00012_digit.png`` for ``some/dir/digit.png``, ``00013_batch-7.png`` for
    ``batch.npy[7]``: numbered, so that two files of one name never overwrite each other."""
    # Only an array's row ends in "]" ("file.npy[7]"); a path may hold brackets of its own.
    path, _, item = source[:-1].rpartition("[") if source.endswith("]") else (source, "", "")
    return f"{index:05d}_{Path(path).stem}{'-' + item if item else ''}.png"


def write_maps(out_dir: Path, found: Detector, given: inputs.Inputs, first: int = 0) -> None:
    """Each image, its reconstruction and its anomaly map, as one PNG per image (numbered
    from ``first``)."""
    from aejax import plots

    maps = found.maps(given.images)
    for i, source in enumerate(given.sources):
        plots.anomaly_map(
            given.images[i],
            maps["reconstruction"][i],
            maps["anomaly"][i],
            out_dir / map_name(first + i, source),
            title=source,
        )

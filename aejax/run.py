"""A training run on disk: its workdir, its lock, its saved config and restoring it.

::

    runs/dense-mnist/
      config.json        the resolved config (also saved inside every checkpoint)
      metrics.jsonl      one line per epoch
      loss.png           the loss curves
      checkpoints/<epoch>/{state,meta}
      eval/              what `python -m aejax.eval` writes
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from aejax import core, data, models, run_state
from aejax.checkpoint import Checkpoints
from aejax.config import RunConfig, batch_size
from aejax.errors import AejaxError
from aejax.parallel import Placement

RUNS_DIR = Path("runs")
# The parameter tree a checkpoint holds, saved in its meta as "format". 3: the models as
# flax layers (aejax.models). Earlier formats were only written by unreleased versions, so
# they are refused with a clear error rather than converted.
CHECKPOINT_FORMAT = 3


def default_workdir(arch: str, dataset: str, given: dict | None = None) -> Path:
    """``runs/<arch>-<dataset>[-<option>...]``: the dataset as :func:`aejax.data.display_name`
    names it (a folder by its last path component, a ``.npy`` file by its stem), then each
    option in ``given`` (:class:`RunConfig` fields; ``model``: model options) that makes the
    run differ from the defaults, so that runs that differ never share a folder. How long
    it trains is no difference (``--epochs`` extends a run).

    >>> default_workdir("dense", "mnist").as_posix()
    'runs/dense-mnist'
    >>> given = {"ensemble": 8, "seed": 0, "epochs": 3, "model": {"depth": 3}}
    >>> default_workdir("conv", "emnist/letters", given).as_posix()
    'runs/conv-emnist_letters-ensemble8-depth3'
    """
    given = dict(given or {})
    model = given.pop("model", {}) or {}
    defaults = dataclasses.asdict(RunConfig())
    parts = [arch, data.display_name(dataset)]
    for name, value in given.items():
        if name in _NAMED and value is not None and value != defaults[name]:
            parts.append(_NAMED[name](value))
    parts += [f"{name}{_compact(value)}" for name, value in model.items()]
    return RUNS_DIR / _safe("-".join(parts))


# How each option that shapes a run is written in its default workdir's name.
_NAMED = {
    "ensemble": lambda k: f"ensemble{k}",
    "seed": lambda s: f"seed{s}",
    "lr": lambda lr: f"lr{lr:g}",
    "batch_size": lambda b: f"batch{b}",
    "holdout": lambda n: f"holdout{n}",
    "compute_dtype": str,
    "mutation_rate": lambda r: f"mutation{r:g}",
    "transform_head": lambda on: "transforms",
    "image_size": lambda hw: "x".join(map(str, hw)),
    "channels": lambda c: {1: "grey", 3: "rgb"}.get(c, f"channels{c}"),
}


def _compact(value) -> str:
    if isinstance(value, list | tuple):
        return "x".join(map(_compact, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _safe(name: str) -> str:
    """A folder name from anything: what is not a letter, digit, ``.``, ``_`` or ``-`` as
    ``_`` (a TFDS name's ``/`` and ``:``, a version's ``*``, spaces)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


LOCK_FILE = ".lock"


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Holds ``workdir`` (created if need be) for one training process: a second run started
    on it meanwhile is one clear error, not two runs writing the same checkpoints. The lock
    is the kernel's (``flock``), so a killed run never leaves a stale one behind."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise AejaxError(
                f"{workdir} is in use by {holder}: wait for it to finish, or use another --workdir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"python -m aejax.train (pid {os.getpid()})\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def move_aside(workdir: Path) -> Path:
    """Renames a run's directory to ``<workdir>.<time>`` (``--fresh``: nothing is deleted)."""
    with workdir_lock(workdir):
        aside = workdir.with_name(f"{workdir.name}.{datetime.datetime.now():%Y%m%d-%H%M%S}")
        workdir.rename(aside)
    return aside


def device_hints(given: dict, workdir: Path | None) -> tuple[str, int]:
    """The run's architecture and batch size as far as they are known before JAX starts,
    to choose the devices (not the config: :func:`aejax.config.resolve` makes that, once
    the data is read): from ``given``, else ``workdir``'s config.json, else the defaults."""
    peeked = peek_config(workdir) if workdir is not None else None
    arch = given.get("arch") or (peeked.arch if peeked else RunConfig.arch)
    batch = given.get("batch_size") or (peeked.batch_size if peeked and peeked.arch == arch else 0)
    return arch, batch_size(arch, batch)


def restore_state(
    checkpoints: Checkpoints,
    step: int | None,
    config: RunConfig,
    placement: Placement | None = None,
) -> tuple[core.TrainState, dict]:
    """``(state, meta)`` of checkpoint ``step`` (None: the latest) of a ``config`` run."""
    written = checkpoints.meta(step).get("format")
    if written != CHECKPOINT_FORMAT:
        raise AejaxError(
            f"the checkpoints in {checkpoints.directory} were written by an unreleased aejax "
            f"(format {written or 'before 3'}; this one reads {CHECKPOINT_FORMAT}): train "
            "again, with --fresh to keep the old run aside"
        )
    return checkpoints.restore(step, run_state.abstract_state(config, placement))


def peek_config(workdir: Path) -> RunConfig | None:
    """The config a workdir's ``config.json`` records (read before JAX starts, to choose the
    devices); :func:`saved_config`, from the checkpoint, is the authority."""
    try:
        return RunConfig.from_dict(json.loads((workdir / "config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def saved_config(workdir: Path) -> RunConfig | None:
    """The config of the run in ``workdir``, from its latest checkpoint, if it has one."""
    if not (workdir / "checkpoints").is_dir():
        return None
    with Checkpoints(workdir / "checkpoints", read_only=True) as checkpoints:
        if checkpoints.latest_step() is None:
            return None
        return RunConfig.from_dict(checkpoints.meta()["config"])


def model_step(history: list[dict]) -> int | None:
    """The epoch whose checkpoint is the run's model, from the ``history`` of its newest
    checkpoint: the best epoch of a run that stopped early (the ``stopped`` record of its
    last epoch, written by :meth:`aejax.train.Trainer.save`), else None (the latest)."""
    return history[-1].get("stopped", {}).get("best_epoch") if history else None


def latest_workdir() -> Path:
    """The run under ``runs/`` with the most recently written checkpoint."""
    candidates = [
        d
        for d in RUNS_DIR.glob("*")
        if (d / "checkpoints").is_dir()
        and any(p.name.isdigit() for p in (d / "checkpoints").iterdir())
    ]
    if not candidates:
        raise AejaxError(
            f"no trained run under {RUNS_DIR.absolute()}: train one first "
            "(python -m aejax.train --arch dense) or pass --workdir"
        )
    return max(candidates, key=lambda d: (d / "checkpoints").stat().st_mtime)


def restore(
    workdir: str | Path, step: int | None = None, placement: Placement | None = None
) -> tuple[core.TrainState, RunConfig, dict]:
    """``(state, config, meta)`` of the run in ``workdir``; ``step`` None means its model: the
    latest epoch, or the best one of a run that stopped early (:func:`model_step`); with a
    placement, the state is replicated over its devices."""
    workdir = Path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise AejaxError(
            f"{workdir} holds no checkpoints: train first "
            f"(python -m aejax.train --workdir {workdir}) or give another --workdir"
        )
    with Checkpoints(workdir / "checkpoints", read_only=True) as checkpoints:
        if step is None:
            step = model_step(checkpoints.meta()["history"])
        meta = checkpoints.meta(step)
        config = RunConfig.from_dict(meta["config"])
        if config.arch not in models.names():
            raise AejaxError(
                f"{workdir} was trained with --arch {config.arch}, which this "
                f"aejax does not have ({', '.join(models.names())})"
            )
        state, meta = restore_state(checkpoints, step, config, placement)
    return state, config, meta

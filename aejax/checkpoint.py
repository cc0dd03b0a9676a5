"""Orbax checkpoints of a :class:`~aejax.core.TrainState`, with the run's metadata beside it.

Checkpoints under ``<workdir>/checkpoints/<epoch>/``, at most one per epoch (training saves
every epoch that ends ``min_interval_s`` after the previous save, and always the last one),
two items each:

* ``state``: the TrainState pytree (params, Adam state, step, rng);
* ``meta``: JSON: the run's config (arch and model options included) and the per-epoch
  metrics so far, so that a checkpoint alone says what it is and how it got there.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
run killed at any moment leaves the previous checkpoints intact. Saves run in the background
on accelerators (:meth:`Checkpoints.close` waits for them) and in the foreground on CPU, where
a background save competes with the next epoch's computation for the same cores, and
finishing it first costs the same CPU time (experiments/results/speed.md).

A checkpoint that cannot be read is moved to ``<workdir>/damaged-checkpoints/`` with a
warning, and the newest readable one is used instead; nothing is ever deleted.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from aejax import files
from aejax.errors import AejaxError

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's name for a checkpoint still being written
DAMAGED_DIR = "damaged-checkpoints"  # beside checkpoints/: unreadable ones, moved aside

# Orbax logs every save and restore, and its own view of a damaged file, through absl; the
# command-line tools print aejax's one line instead (--verbose shows Orbax's: aejax.cli).
logging.getLogger("absl").setLevel(logging.CRITICAL)


class Unreadable(AejaxError):
    """A checkpoint that exists but cannot be read (damaged, truncated, foreign)."""


class Checkpoints:
    """The checkpoints of one run directory.

    A reader (``read_only=True``: evaluation, peeking at a run's config) never creates or
    cleans anything; a writer (training) creates the directory and removes what an
    interrupted save left. Either way, :meth:`close` (or the ``with`` block) waits for every
    thread Orbax started, so none outlives an error.
    """

    def __init__(
        self,
        directory: str | Path,
        max_to_keep: int = 3,
        background: bool | None = None,
        read_only: bool = False,
        min_interval_s: int = 0,
    ):
        """``background``: return from :meth:`save` before the files are written (default:
        unless JAX computes on the CPU). ``min_interval_s``: :meth:`save` skips a step that
        comes sooner than this after the previous checkpoint (0: saves every step)."""
        self.directory = Path(directory).absolute()
        self.background = jax.default_backend() != "cpu" if background is None else background
        # Orbax's policy decides on process 0 and tells the others: every process saves the
        # same steps, whatever its clock says.
        policy = ocp.checkpoint_managers.ContinuousCheckpointingPolicy(
            minimum_interval_secs=min_interval_s
        )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            read_only=read_only,
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            save_decision_policy=policy if min_interval_s > 0 else None,
        )
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "meta")
            )
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - Orbax wraps filesystem errors its own way
            raise files.os_error_behind(e, self.directory) or AejaxError(
                f"cannot open checkpoints in {self.directory} ({_first_line(e)})"
            ) from e
        # The writer's clean-up of an interrupted save runs in a background thread that
        # Orbax only joins at the next save: join it now, so an error before any save does
        # not leave it running into interpreter shutdown (where it printed a traceback).
        # Orbax has no public call for this; tests/test_faults.py fails if it goes away.
        self._manager._maybe_await_cleanup_tmp_directory()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
        """Saves checkpoint ``step`` (unless the interval skips it and not ``force``); in the
        background, :meth:`close` or the next save waits for it. Returns whether it saved.
        A save that fails (disk full, permissions) leaves the earlier checkpoints as they
        were and nothing half-written: its temporary directory is removed."""
        try:
            saved = self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=force,
            )
            if not self.background:
                self._manager.wait_until_finished()
            return saved
        except BaseException as e:  # noqa: BLE001 - TensorStore and Orbax raise their own types
            self._remove_unfinished(step)
            if isinstance(e, OSError) or not isinstance(e, Exception):
                raise  # a filesystem error says it all; Ctrl-C / SIGTERM is not a failure
            raise files.os_error_behind(e, self.directory) or AejaxError(
                f"saving checkpoint {step} in {self.directory} failed ({_first_line(e)}); "
                "the earlier checkpoints are intact: run the same command again to resume"
            ) from e

    def _remove_unfinished(self, step: int) -> None:
        # Orbax's own temporary directory of this step: never a finished checkpoint.
        for tmp in self.directory.glob(f"{step}{TMP_SUFFIX}*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def _existing_steps(self) -> list[int]:
        """:meth:`all_steps`, or one clear error when there are none."""
        steps = self.all_steps()
        if not steps:
            raise AejaxError(
                f"no checkpoint in {self.directory}: train first "
                "(python -m aejax.train ...) or give the right --workdir"
            )
        return steps

    def _check_step(self, step: int) -> None:
        steps = self._existing_steps()
        if step not in steps:
            raise AejaxError(
                f"no checkpoint for step {step} in {self.directory}; "
                f"there are: {', '.join(map(str, steps))}"
            )

    def _read(self, step: int, abstract_state=None) -> dict:
        self._check_step(step)
        items = {"meta": ocp.args.JsonRestore()}
        if abstract_state is not None:
            items["state"] = ocp.args.StandardRestore(abstract_state)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            meta = restored["meta"]
            if not isinstance(meta, dict):
                raise ValueError(f"its meta is {type(meta).__name__}, not a JSON object")
        except Exception as e:  # noqa: BLE001 - whatever Orbax raises, the files are unusable
            raise Unreadable(
                f"checkpoint {self.directory / str(step)} cannot be read ({_first_line(e)})"
            ) from e
        return {"meta": dict(meta), "state": restored.get("state")}

    def _readable(self, step: int | None, abstract_state=None) -> dict:
        """Checkpoint ``step`` read; ``None``: the newest readable one, each newer one that
        cannot be read moved aside with a warning."""
        if step is not None:
            try:
                return self._read(step, abstract_state)
            except Unreadable as e:
                others = [s for s in self.all_steps() if s != step]
                raise AejaxError(
                    f"{e}: ask for another step ({', '.join(map(str, others))})"
                    if others
                    else f"{e}; start over with --fresh"
                ) from None
        for candidate in reversed(self._existing_steps()):
            try:
                return self._read(candidate, abstract_state)
            except Unreadable as e:
                self._set_aside(candidate, e)
        raise AejaxError(
            f"no readable checkpoint is left in {self.directory} (the damaged "
            f"ones are in {self.directory.parent / DAMAGED_DIR}): start over "
            "with --fresh"
        )

    def _set_aside(self, step: int, error: Unreadable) -> None:
        """Moves unreadable checkpoint ``step`` to ``damaged-checkpoints/`` (never deletes
        it), so that it no longer hides the ones before it."""
        source = self.directory / str(step)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.directory.parent / DAMAGED_DIR / f"{step}.{stamp}"
        try:
            target.parent.mkdir(exist_ok=True)
            source.rename(target)
            moved = f"moved it to {target}"
        except OSError as e:
            moved = f"could not move it aside ({e.strerror})"
        older = [s for s in self.all_steps() if s < step]
        sys.stderr.write(
            f"warning: {error}; {moved}; "
            f"{f'using checkpoint {older[-1]}' if older else 'none is older'}\n"
        )
        self._manager.reload()

    def meta(self, step: int | None = None) -> dict:
        """The JSON metadata saved with checkpoint ``step`` (default: the newest readable)."""
        return self._readable(step)["meta"]

    def restore(self, step: int | None, abstract_state) -> tuple[object, dict]:
        """``(state, meta)`` of checkpoint ``step`` (default: the newest readable one),
        restored into the shapes, dtypes and shardings of ``abstract_state`` (e.g. from
        ``jax.eval_shape``)."""
        restored = self._readable(step, abstract_state)
        return restored["state"], restored["meta"]

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _first_line(error: Exception) -> str:
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.split(". See full TensorStore details")[0][:160]


def abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of ``tree``'s arrays, for restoring into."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)

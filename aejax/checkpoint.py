"""Orbax checkpoints of a :class:`~aejax.core.TrainState`, with the run's metadata beside it.

One checkpoint per epoch under ``<workdir>/checkpoints/<epoch>/``, two items each:

* ``state``: the TrainState pytree (params, Adam state, step, rng);
* ``meta``: JSON: the run's config (arch and model options included) and the per-epoch
  metrics so far, so that a checkpoint alone says what it is and how it got there.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
run killed at any moment leaves the previous checkpoints intact. Saves run in the background
on accelerators (:meth:`Checkpoints.close` waits for them) and in the foreground on CPU, where
a background save competes with the next epoch's computation for the same cores (dense net:
0.168 -> 0.192 s per epoch) and finishing it first costs the same CPU time.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from aejax.errors import AejaxError

# Orbax logs every save and restore at INFO/WARNING; a training CLI should not.
logging.getLogger("absl").setLevel(logging.ERROR)


class Checkpoints:
    """The checkpoints of one run directory."""

    def __init__(self, directory: str | Path, max_to_keep: int = 3,
                 background: bool | None = None):
        """``background``: return from :meth:`save` before the files are written (default:
        unless JAX computes on the CPU)."""
        self.directory = Path(directory).absolute()
        self.background = jax.default_backend() != "cpu" if background is None else background
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
            ),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state, meta: dict) -> None:
        """Saves checkpoint ``step``; in the background, :meth:`close` or the next save waits
        for it."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )
        if not self.background:
            self._manager.wait_until_finished()

    def _check_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise AejaxError(f"no checkpoint in {self.directory}: train first "
                             "(python -m aejax.train ...) or give the right --workdir")
        step = max(steps) if step is None else step
        if step not in steps:
            raise AejaxError(f"no checkpoint for step {step} in {self.directory}; "
                             f"there are: {', '.join(map(str, steps))}")
        return step

    def meta(self, step: int | None = None) -> dict:
        """The JSON metadata saved with checkpoint ``step`` (default: the latest)."""
        step = self._check_step(step)
        _ignore_late_orbax_callbacks()
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        except Exception as e:  # noqa: BLE001 - whatever Orbax raises, the file is unusable
            raise self._unreadable(step, e) from e
        return dict(restored["meta"])

    def restore(self, step: int | None, abstract_state) -> tuple[object, dict]:
        """``(state, meta)`` of checkpoint ``step`` (default latest), restored into the shapes,
        dtypes and shardings of ``abstract_state`` (e.g. from ``jax.eval_shape``)."""
        step = self._check_step(step)
        _ignore_late_orbax_callbacks()
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # noqa: BLE001
            raise self._unreadable(step, e) from e
        return restored["state"], dict(restored["meta"])

    def _unreadable(self, step: int, error: Exception) -> AejaxError:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        where = self.directory / str(step)
        if "mismatch" in reason.lower() or "shape" in reason.lower():
            return AejaxError(f"checkpoint {where} holds a different model than the one asked "
                              f"for ({reason}); use the run's own --arch/options or --fresh")
        return AejaxError(
            f"checkpoint {where} cannot be restored ({reason}); if it is damaged, move it "
            "aside to use the one before it, or start over with --fresh"
        )

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _ignore_late_orbax_callbacks() -> None:
    """Drops the "Event loop is closed" errors of a failed restore's leftover reads.

    Orbax runs a restore's reads on an asyncio loop that it closes when the restore fails;
    TensorStore reads still in flight then complete into that closed loop, and Python prints
    each one's traceback (through ``sys.unraisablehook``) around aejax's one-line error.
    Installed (once) before restoring, as those reads can finish before the error is
    handled; every other unraisable exception still goes to the previous hook.
    """
    global _hook_installed
    if _hook_installed:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook
    _hook_installed = True


_hook_installed = False


def abstract(tree):
    """Shapes, dtypes and shardings of ``tree``'s arrays, for restoring into."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)

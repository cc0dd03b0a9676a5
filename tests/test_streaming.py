"""Training from batches streamed off disk: the same batches and steps as from device memory."""

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from aejax import core, data, run
from aejax.core import steps
from tests.helpers import start_aejax, wait_for_checkpoint


@pytest.mark.slow  # two compiled epoch loops
def test_a_streamed_epoch_trains_the_same_steps_as_a_resident_one():
    images = data.open_rows("mnist", "train[:3000]")[0]
    assert isinstance(images, np.memmap)  # rows are read from the decoded copy on disk
    states = {}
    for how, source in (("resident", jax.device_put(np.asarray(images))), ("streamed", images)):
        state = core.init_state("dense", jax.random.key(0))
        for epoch in range(2):
            state, metrics = core.train_epoch(
                state, source, jax.random.key(epoch), batch_size=256, num_examples=2900
            )
        states[how] = (state, metrics)
    (a, ma), (b, mb) = states["resident"], states["streamed"]
    assert float(ma["loss"]) == pytest.approx(float(mb["loss"]), rel=1e-6)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # compiled epoch loops
@pytest.mark.parametrize("devices", [1, 2])
def test_reused_host_buffers_give_the_bits_of_fresh_ones(monkeypatch, devices):
    # A streamed epoch gathers its chunks into HOST_BUFFERS buffers in turn, which the CPU
    # device reads in place: refilling one before its chunk's steps ran would change them.
    from aejax import parallel

    images = data.open_rows("mnist", "train[:3000]")[0]
    placement = parallel.Placement.create(devices)
    sharding = placement.batch if devices > 1 else None
    results = []
    for buffers in (steps.HOST_BUFFERS, 1000):  # reused / one per chunk
        monkeypatch.setattr(steps, "HOST_BUFFERS", buffers)
        state = placement.replicate(core.init_state("dense", jax.random.key(0)))
        for epoch in range(2):  # 6 chunks an epoch: each buffer refilled twice
            state, metrics = core.train_epoch(state, images, jax.random.key(epoch),
                                              batch_size=256, batch_sharding=sharding)  # fmt: skip
        results.append([np.asarray(v) for v in jax.tree.leaves((state.params, metrics))])
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_aligned_host_buffers_are_read_in_place_on_cpu():
    rows = steps._aligned_empty((100, 28, 28, 1), np.uint8)
    assert rows.ctypes.data % 64 == 0 and rows.shape == (100, 28, 28, 1)
    rows[...] = 7
    # Why they are aligned: JAX then uses their memory instead of copying it.
    assert jax.device_put(rows, jax.devices("cpu")[0]).unsafe_buffer_pointer() == rows.ctypes.data


SMALL = ["--arch", "dense", "--holdout", "50000", "--checkpoint-every", "0"]  # every epoch saved


def cli_train(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "aejax.train", *SMALL, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def final_params(workdir):
    return jax.tree.leaves(jax.tree.map(np.asarray, run.restore(workdir)[0].params))


@pytest.mark.slow
def test_streaming_gives_the_losses_of_training_in_memory(tmp_path):
    resident = cli_train("--epochs", 2, "--workdir", tmp_path / "resident", "--no-stream")
    # Over a tiny memory budget, training streams without being asked to.
    streamed = cli_train(
        "--epochs", 2, "--workdir", tmp_path / "streamed", env={"AEJAX_MEMORY_BUDGET_GB": "0.001"}
    )
    assert resident.returncode == streamed.returncode == 0, streamed.stderr
    assert "streaming batches from disk" in streamed.stderr
    assert "streaming batches" not in resident.stderr
    a = [(h["loss"], h["val_loss"]) for h in run.restore(tmp_path / "resident")[2]["history"]]
    b = [(h["loss"], h["val_loss"]) for h in run.restore(tmp_path / "streamed")[2]["history"]]
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.slow
def test_a_killed_streaming_run_resumes_bit_identically(tmp_path):
    killed = tmp_path / "killed"
    process = start_aejax("train", *SMALL, "--epochs", 4, "--stream", "--workdir", killed)
    wait_for_checkpoint(process, killed, 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert cli_train("--epochs", 4, "--stream", "--workdir", killed).returncode == 0
    straight = cli_train("--epochs", 4, "--stream", "--workdir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    for a, b in zip(final_params(killed), final_params(tmp_path / "straight"), strict=True):
        np.testing.assert_array_equal(a, b)

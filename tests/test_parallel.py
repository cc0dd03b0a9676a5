"""Data parallelism on 8 simulated CPU devices, and across 2 processes on localhost."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from aejax import core, data, parallel, run
from aejax.core import steps
from aejax.errors import AejaxError
from aejax.train import __main__ as train_cli

pytestmark = pytest.mark.slow  # subprocesses, training, 8-device compiles

# Float tolerance: the sharded step sums per-example losses and gradients per device and then
# across devices, a different order than one device's sum. Each order is exact to float32
# rounding (relative 6e-8 per addition, ~1e-6 over a 256-term sum); over tens of Adam steps
# such differences stay within ~1e-5 relative of the loss (measured: ~1e-7 after 2 epochs).
RTOL = 2e-5


def test_the_session_has_8_cpu_devices():
    assert jax.device_count() == 8 and jax.devices()[0].platform == "cpu"


@pytest.fixture(scope="module")
def mnist_slice():
    images, _ = data.load("mnist", "train[:2001]")  # 2001: not a multiple of 8 devices
    return images


def run_epochs(arch, images, placement, epochs=2, batch_size=128):
    state = core.init_state(arch, jax.random.key(0))
    batch_sharding = None
    if placement is not None:
        state = placement.replicate(state)
        batch_sharding = placement.batch
        images_dev = placement.put_rows(
            len(images), lambda a, b: images[a:b], row_shape=images.shape[1:]
        )
    else:
        images_dev = jax.device_put(images)
    losses = []
    for epoch in range(epochs):
        state, metrics = core.train_epoch(
            state,
            images_dev,
            jax.random.key(epoch),
            batch_size=batch_size,
            num_examples=len(images),
            batch_sharding=batch_sharding,
        )
        scores = core.score(state, images_dev, batch_sharding=batch_sharding)[: len(images)]
        losses.append((float(metrics["loss"]), float(scores.mean())))
    return state, losses, np.asarray(scores)


@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_eight_devices_match_one(arch, mnist_slice):
    placement = parallel.Placement.create(8)
    assert placement.size == 8
    one_state, one_losses, one_scores = run_epochs(arch, mnist_slice, None)
    eight_state, eight_losses, eight_scores = run_epochs(arch, mnist_slice, placement)
    np.testing.assert_allclose(eight_losses, one_losses, rtol=RTOL)
    np.testing.assert_allclose(eight_scores, one_scores, rtol=RTOL * 5)
    for a, b in zip(
        jax.tree.leaves(eight_state.params), jax.tree.leaves(one_state.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    # The parameters really are replicated on all 8 devices, the data split over them.
    leaf = jax.tree.leaves(eight_state.params)[0]
    assert len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated


def test_a_noisy_model_on_eight_devices_draws_its_own_noise_per_device(mnist_slice):
    # Each device folds its index into the step's key: the same data, other noise draws, so
    # the losses are close to one device's but not equal, and reproducible run to run.
    placement = parallel.Placement.create(8)
    _, one, _ = run_epochs("denoising", mnist_slice, None, epochs=1)
    _, eight, _ = run_epochs("denoising", mnist_slice, placement, epochs=1)
    _, again, _ = run_epochs("denoising", mnist_slice, placement, epochs=1)
    assert eight == again
    np.testing.assert_allclose(eight, one, rtol=0.02)
    assert eight != one


def test_a_step_exchanges_its_gradients_in_one_flat_all_reduce():
    # XLA:CPU runs a tuple all-reduce at ~70 us per operand; the step sums every gradient and
    # metric in one flat float32 vector instead (aejax.core.steps._summed_over_devices).
    placement = parallel.Placement.create(8)
    state = placement.replicate(core.init_state("conv", jax.random.key(0)))
    images = placement.put_rows(
        64, lambda a, b: np.zeros((b - a, 28, 28, 1), np.uint8), row_shape=(28, 28, 1)
    )
    order = jax.device_put(
        core.epoch_order(jax.random.key(0), 64, 16).reshape(1, 4, 16), placement.replicated
    )
    hlo = steps._train_steps.lower(state, images, order, 0, placement.batch).compile().as_text()
    all_reduces = re.findall(r" = (.*?) all-reduce\(", hlo)  # their result types
    params = sum(leaf.size for leaf in jax.tree.leaves(state.params))
    assert not [t for t in all_reduces if t.startswith("(")], all_reduces  # no tuples
    # Every parameter's gradient plus the loss sum in one buffer (the others: the batch
    # gather and the example count, once per call rather than per step).
    assert [t for t in all_reduces if t.startswith(f"f32[{params + 1}]")], all_reduces


def test_aejax_xla_flags_join_the_users_without_overriding_them():
    from aejax import xla

    flags = xla.with_flags("--xla_cpu_prefer_vector_width=256").split()
    assert "--xla_cpu_prefer_vector_width=256" in flags  # the user's choice stands
    assert "--xla_cpu_prefer_vector_width=512" not in flags
    assert "--xla_cpu_experimental_ynn_fusion_type=" in flags


def test_rows_are_sharded_and_padded():
    placement = parallel.Placement.create(8)
    rows = np.arange(1001 * 2, dtype=np.float32).reshape(1001, 2)
    array = placement.put_rows(1001, lambda a, b: rows[a:b], row_shape=(2,), dtype=np.float32)
    assert array.shape == (1008, 2)  # padded to 126 rows per device
    assert {s.data.shape for s in array.addressable_shards} == {(126, 2)}
    np.testing.assert_array_equal(np.asarray(array)[:1001], rows)
    assert not np.asarray(array)[1001:].any()


def test_batch_that_does_not_split_is_a_clear_error():
    with pytest.raises(AejaxError, match="batch size 100 does not split over 8 devices"):
        parallel.Placement.create(8).check_batch_size(100)
    with pytest.raises(AejaxError, match="--devices 9, but JAX sees 8"):
        parallel.Placement.create(9)


def metrics_of(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [[m[k] for k in ("loss", "val_loss", "holdout_loss")] for m in map(json.loads, lines)]


def test_cli_on_8_devices_matches_1(tmp_path):
    common = ["--arch", "dense", "--holdout", "50000", "--epochs", "2"]
    assert train_cli.main([*common, "--workdir", str(tmp_path / "one"), "--devices", "1"]) == 0
    assert train_cli.main([*common, "--workdir", str(tmp_path / "eight")]) == 0  # all devices
    np.testing.assert_allclose(
        metrics_of(tmp_path / "eight"), metrics_of(tmp_path / "one"), rtol=RTOL
    )


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_processes(workdir, epochs, dataset):
    """The same `aejax.train` command as two processes on localhost (CPU collectives: gloo),
    one CPU device each."""
    return two_processes_run(
        "train", "--arch", "dense", "--dataset", str(dataset), "--epochs", str(epochs),
        "--workdir", str(workdir),
    )  # fmt: skip


def mnist_part(tmp_path, n=6000):
    """MNIST's first ``n`` training images as a ``.npy`` dataset: a job of several processes
    scores every held-out and test image in lockstep, which MNIST's 70k would make minutes."""
    path = tmp_path / "mnist_part.npy"
    np.save(path, data.load("mnist", f"train[:{n}]")[0])
    return path


def two_processes_run(tool: str, *options: str) -> list[str]:
    """``python -m aejax.TOOL OPTIONS`` as a job of two processes of one CPU device each;
    their outputs."""
    port = free_port()
    command = [
        sys.executable, "-m", f"aejax.{tool}", *options, "--cpu-devices", "1",
        "--coordinator-address", f"localhost:{port}", "--num-processes", "2",
    ]  # fmt: skip
    processes = [
        subprocess.Popen(
            [*command, "--process-id", str(i)],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert not any("[Gloo]" in output for output in outputs), outputs  # gloo's own lines
    return outputs


def test_two_processes_train_checkpoint_resume_and_match_one(tmp_path):
    dataset = mnist_part(tmp_path)
    outputs = two_processes(tmp_path / "multi", epochs=2, dataset=dataset)
    assert "on 2 CPU devices in 2 processes" in outputs[0]
    assert "test BCE" in outputs[0] and "test BCE" not in outputs[1]  # process 0 reports
    # Each process wrote its own shard directory of the same checkpoint.
    state_dir = tmp_path / "multi" / "checkpoints" / "2" / "state"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= {p.name for p in state_dir.iterdir()}
    outputs = two_processes(tmp_path / "multi", epochs=3, dataset=dataset)  # from epoch 2
    assert "resuming" in outputs[0]
    # Evaluating it as a two-process job too: every process takes part, process 0 writes.
    out = tmp_path / "multi-eval"
    outputs = two_processes_run(
        "eval", "--workdir", str(tmp_path / "multi"), "--ood", "uniform", "--out", str(out)
    )
    assert "AUROC" in outputs[0] and (out / "report.json").is_file()

    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "aejax.train",
            "--arch",
            "dense",
            "--dataset",
            str(dataset),
            "--epochs",
            "3",
            "--workdir",
            str(tmp_path / "single"),
            "--cpu-devices",
            "1",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert single.returncode == 0, single.stderr
    np.testing.assert_allclose(
        metrics_of(tmp_path / "multi"), metrics_of(tmp_path / "single"), rtol=RTOL
    )
    multi_state, _, _ = run.restore(tmp_path / "multi")
    single_state, _, _ = run.restore(tmp_path / "single")
    for a, b in zip(
        jax.tree.leaves(multi_state.params), jax.tree.leaves(single_state.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def slurm_job_id() -> int:
    """A SLURM job id whose coordinator port is free: JAX's SLURM detection listens on
    ``61440 + job_id % 4096``."""
    for job_id in range(4096):
        with socket.socket() as s:
            try:
                s.bind(("localhost", 61440 + job_id))
                return job_id
            except OSError:
                continue
    raise RuntimeError("no free port in 61440-65535")


def scaling_out_commands() -> dict[str, str]:
    """docs/scaling_out.md's commands for a cluster, by what starts them: the one for "N CPU
    hosts" (``--coordinator-address``) and the one ``srun`` starts."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "scaling_out.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in block.splitlines() if not line.startswith("#")]
    return {
        "hosts": next(line for line in lines if "--coordinator-address" in line),
        "srun": next(line for line in lines if line.startswith("srun ")),
    }


def test_the_scaling_out_guides_cluster_commands_run_as_written(tmp_path):
    # Each command as the guide writes it, for a job of 2 processes on this host (N = 2; host
    # i is process i), on 1,024 MNIST images for 1 epoch. srun is not installed here: each
    # process gets the variables srun sets for `srun --ntasks 2` on one node, which is what
    # JAX's cluster detection (behind --distributed) reads. Both jobs are the same computation
    # on the same 4 devices (2 per process, the conv net's default), so they match.
    commands = scaling_out_commands()
    small = ["--dataset", str(mnist_part(tmp_path, n=1024)), "--epochs", "1"]

    def job(command: str, env_of) -> None:
        """``command`` (``{i}``: the process id) as processes 0 and 1, in ``env_of(i)``."""
        processes = []
        for i in range(2):
            argv = shlex.split(command.format(i=i))
            processes.append(subprocess.Popen(
                [sys.executable, *argv[argv.index("-m"):], *small], env=env_of(i),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))  # fmt: skip
        outputs = [p.communicate(timeout=300)[0] for p in processes]
        assert [p.returncode for p in processes] == [0, 0], outputs
        assert "on 4 CPU devices in 2 processes" in outputs[0], outputs[0]
        assert "; for 1 epoch of " in outputs[0], outputs[0]  # "1 epoch", not "1 epochs"
        assert not any("[Gloo]" in output for output in outputs), outputs

    hosts = (
        commands["hosts"]
        .replace("HOST0:1234", f"localhost:{free_port()}")
        .replace("--num-processes N", "--num-processes 2")
        .replace("--process-id i", "--process-id {i}")
        .replace("/shared/runs/conv-mnist", str(tmp_path / "hosts"))
    )
    job(hosts, lambda i: dict(os.environ))
    slurm = {"SLURM_JOB_ID": str(slurm_job_id()), "SLURM_STEP_NODELIST": "localhost",
             "SLURM_NTASKS": "2", "SLURM_STEP_NUM_NODES": "1"}  # fmt: skip
    srun = commands["srun"].replace("/shared/runs/conv-mnist", str(tmp_path / "srun"))
    job(srun, lambda i: {**os.environ, **slurm, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)})
    for name in ("hosts", "srun"):
        assert run.saved_config(tmp_path / name).epochs == 1
    a, _, _ = run.restore(tmp_path / "hosts")
    b, _, _ = run.restore(tmp_path / "srun")
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_the_commands_trim_memory_on_the_event_jax_records_after_each_compilation():
    # aejax.xla.release_memory_after_compiles listens for COMPILE_EVENT: a JAX that renamed
    # it would leave the commands' compilers' freed memory in glibc's arenas again.
    import jax

    from aejax import xla

    seen = []

    def listener(event, duration, **kwargs):
        seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        jax.jit(lambda x: x * 3.0 + 1.0)(jax.numpy.ones(7)).block_until_ready()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert xla.COMPILE_EVENT in seen
    xla.release_memory_after_compiles()
    xla.release_memory_after_compiles()  # once per process, however often the commands run
    assert len(xla._trimming) <= 1

"""`python -m aejax.train` on real MNIST with a small config: files, resume, errors.

`--holdout 50000` keeps 50k of the 60k training images out, so an epoch is 10k images.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import jax
import jaxlib
import numpy as np
import pytest

from aejax import run, run_state
from aejax import train as training
from aejax.config import RunConfig, resolve
from aejax.errors import AejaxError
from aejax.train import __main__ as train_cli
from tests.helpers import wait_for_checkpoint

SMALL = ["--arch", "dense", "--holdout", "50000", "--checkpoint-every", "0"]  # every epoch saved

# Orbax leaves an asyncio callback behind when a restore fails half-way (the damaged
# checkpoint test); it fires after its event loop closed, during a later test. Harmless.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.slow,
]  # trains through the CLI


def metrics(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def losses(workdir):
    return [(m["epoch"], m["loss"], m["val_loss"], m["holdout_loss"]) for m in metrics(workdir)]


def test_writes_every_file_and_resumes(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert train_cli.main([*SMALL, "--epochs", "2", "--workdir", str(workdir)]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    # 10,000 images an epoch at the tutorial's batch: 40 steps an epoch.
    assert summary.startswith(
        "dense on mnist: 2 epochs (80 steps of 256), 24,319 params, test BCE 0."
    )
    config = json.loads((workdir / "config.json").read_text())
    assert config == {
        "arch": "dense",
        "dataset": "mnist",
        "epochs": 2,
        "batch_size": 256,
        "lr": 0.001,
        "seed": 0,
        "holdout": 50000,
        "compute_dtype": "float32",
        "mutation_rate": 0.0,
        "ensemble": 0,
        "transform_head": False,
        "model": {"latent_dim": 15, "image_shape": [28, 28, 1]},
        "image_size": None,
        "channels": None,
        "early_stopping": False,
    }
    assert [m["epoch"] for m in metrics(workdir)] == [1, 2]
    assert (workdir / "loss.png").stat().st_size > 10_000
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1", "2"]
    # The last epoch's test BCE is what the checkpoint's model gives.
    state, _, meta = run.restore(workdir)
    from aejax import core, data

    test_images, _ = data.load("mnist", "test")
    assert float(core.eval_loss(state, test_images)) == pytest.approx(
        metrics(workdir)[-1]["val_loss"], rel=1e-6
    )
    assert meta["history"] == metrics(workdir)

    # The same workdir with more epochs continues: options come from the saved run.
    assert train_cli.main(["--workdir", str(workdir), "--epochs", "3"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert [m["epoch"] for m in metrics(workdir)] == [1, 2, 3]
    assert int(run.restore(workdir)[0].step) == 3 * 40  # 10k / 256 -> 40 steps an epoch
    # Where this command's time went: its one epoch, every phase, adding up to its wall time.
    timings = json.loads((workdir / "timings.json").read_text())
    assert timings["epochs_run"] == 1 and timings["seconds"]["other_epochs_training"] == 0
    phases = timings["seconds"]
    assert {"start_and_imports", "data", "checkpoints", "plots", "evaluation"} <= set(phases)
    assert min(phases.values()) >= 0 and sum(phases.values()) <= timings["total"] + 0.01
    assert sum(phases.values()) > 0.8 * timings["total"]


def test_mismatched_options_are_one_clear_error(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert train_cli.main([*SMALL, "--epochs", "1", "--workdir", str(workdir)]) == 0
    capsys.readouterr()
    assert train_cli.main(["--arch", "conv", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds a dense run, not conv" in err
    assert train_cli.main([*SMALL, "--lr", "0.01", "--workdir", str(workdir)]) == 2
    assert "lr=0.01 (run has 0.001)" in capsys.readouterr().err
    # --fresh starts over and keeps the old run beside the new one.
    assert (
        train_cli.main(
            [
                *SMALL,
                "--arch",
                "dense",
                "--lr",
                "0.01",
                "--epochs",
                "1",
                "--fresh",
                "--workdir",
                str(workdir),
            ]
        )
        == 0
    )
    assert len(list(tmp_path.glob("run.*"))) == 1
    assert json.loads((workdir / "config.json").read_text())["lr"] == 0.01


def test_a_run_whose_only_checkpoint_is_damaged_is_one_clear_error(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert train_cli.main([*SMALL, "--epochs", "1", "--workdir", str(workdir)]) == 0
    for f in (workdir / "checkpoints" / "1" / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"garbage")
    capsys.readouterr()
    assert train_cli.main([*SMALL, "--epochs", "2", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("warning: checkpoint") and "cannot be read" in err[0]
    assert err[-1].startswith("error: no readable checkpoint") and "--fresh" in err[-1]
    assert (workdir / "damaged-checkpoints").is_dir()  # set aside, not deleted


def test_nan_loss_stops_with_a_clear_error(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert train_cli.main([*SMALL, "--epochs", "2", "--lr", "1e30", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "became nan in epoch 1" in err and "lower --lr" in err
    assert not (workdir / "checkpoints" / "1").exists()


def _command(workdir, epochs):
    return [
        sys.executable,
        "-m",
        "aejax.train",
        *SMALL,
        "--epochs",
        str(epochs),
        "--workdir",
        str(workdir),
    ]


def test_same_seed_same_losses_and_sigkill_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight, again, killed = tmp_path / "straight", tmp_path / "again", tmp_path / "killed"
    for workdir in (straight, again):
        subprocess.run(_command(workdir, 5), check=True, env=env, capture_output=True)
    assert losses(straight) == losses(again)

    process = subprocess.Popen(
        _command(killed, 5), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_checkpoint(process, killed, 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = sorted(
        int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert done_before and max(done_before) < 5

    result = subprocess.run(_command(killed, 5), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    assert losses(killed) == losses(straight)
    final_killed, _, _ = run.restore(killed)
    final_straight, _, _ = run.restore(straight)
    for a, b in zip(jax.tree.leaves(final_killed), jax.tree.leaves(final_straight), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoints_keep_their_interval_and_the_last_epoch(tmp_path):
    # Epochs that end sooner than --checkpoint-every after the previous save are not saved;
    # the last one always is, and a resumed run counts from the newest checkpoint's time.
    def saved(workdir):
        return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())

    workdir, straight = tmp_path / "run", tmp_path / "straight"
    hourly = [*SMALL[:-2], "--checkpoint-every", "3600", "--workdir", str(workdir)]
    assert train_cli.main([*hourly, "--epochs", "3"]) == 0
    assert saved(workdir) == [1, 3]
    assert [m["epoch"] for m in metrics(workdir)] == [1, 2, 3]
    assert train_cli.main([*hourly, "--epochs", "5"]) == 0
    assert saved(workdir) == [1, 3, 5]
    assert train_cli.main([*SMALL, "--epochs", "5", "--workdir", str(straight)]) == 0
    assert saved(straight) == [3, 4, 5]  # every epoch, the last 3 kept
    assert losses(workdir) == losses(straight)


def test_after_a_failed_restore_only_orbax_leftover_errors_are_dropped(monkeypatch):
    from types import SimpleNamespace

    from aejax import interrupts

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(interrupts, "_quiet_installed", False)
    interrupts._quiet_lost_signals()
    hook = sys.unraisablehook
    interrupts._quiet_lost_signals()
    assert sys.unraisablehook is hook  # installed once, not wrapped again on every command
    closed, other_error = RuntimeError("Event loop is closed"), RuntimeError("something else")
    leftover = SimpleNamespace(exc_type=RuntimeError, exc_value=closed)
    other = SimpleNamespace(exc_type=RuntimeError, exc_value=other_error)
    sys.unraisablehook(leftover)
    sys.unraisablehook(other)
    assert seen == [other]


@pytest.mark.parametrize("background", [None, True])
def test_checkpoint_is_complete_when_save_returns_on_cpu(tmp_path, background):
    from aejax import core
    from aejax.checkpoint import Checkpoints

    state = core.init_state("dense", jax.random.key(0))
    checkpoints = Checkpoints(tmp_path / "ckpt", background=background)
    checkpoints.save(1, state, {"history": []})
    if background is None:  # the CPU default: written in the foreground
        assert not checkpoints.background
        assert (tmp_path / "ckpt" / "1" / "state").is_dir()
        assert checkpoints.all_steps() == [1]
    checkpoints.close()  # waits for a background save
    restored, meta = Checkpoints(tmp_path / "ckpt").restore(
        1, run_state.abstract_state(resolve(RunConfig(arch="dense")), None)
    )
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_and_evaluate_computes_what_the_cli_computes(tmp_path):
    assert train_cli.main([*SMALL, "--epochs", "2", "--workdir", str(tmp_path / "cli")]) == 0
    config = resolve(RunConfig(arch="dense", epochs=2, holdout=50000))
    _, history = training.train_and_evaluate(config, tmp_path / "lib")
    assert json.loads((tmp_path / "lib" / "config.json").read_text()) == json.loads(
        (tmp_path / "cli" / "config.json").read_text()
    )
    assert losses(tmp_path / "lib") == losses(tmp_path / "cli")
    assert [h["val_loss"] for h in history] == [m["val_loss"] for m in metrics(tmp_path / "cli")]
    # A config that does not agree with the run saved there is refused, as on the CLI.
    with pytest.raises(AejaxError, match="differs in lr=0.01"):
        training.train_and_evaluate(dataclasses.replace(config, lr=0.01), tmp_path / "lib")


def test_a_checkpoint_of_an_unreleased_format_is_a_clear_error(tmp_path):
    # Development versions before format 3 held other parameter trees (e.g. the dense
    # encoder kernel transposed, no "format" in the meta): refused, and nothing is moved.
    from aejax import core
    from aejax.checkpoint import Checkpoints

    config = resolve(RunConfig(arch="dense", holdout=50000))
    workdir = tmp_path / "old"
    with Checkpoints(workdir / "checkpoints") as checkpoints:
        checkpoints.save(
            1,
            core.init_state("dense", jax.random.key(0)),
            {"config": dataclasses.asdict(config), "layout": 2, "history": []},
        )
    with pytest.raises(AejaxError, match="unreleased aejax .format before 3.*--fresh"):
        run.restore(workdir)
    result = subprocess.run(
        [sys.executable, "-m", "aejax.train", *SMALL, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the checkpoints in")
    assert (workdir / "checkpoints" / "1").is_dir()


def test_a_repeated_command_loads_its_compiled_programs(tmp_path):
    from aejax.data import cache

    def train_in(workdir, cache_home, *extra):
        # The decoded datasets stay where they are; only the compiled programs move.
        env = {**os.environ, "XDG_CACHE_HOME": str(cache_home),
               "AEJAX_CACHE_DIR": str(cache.cache_root())}  # fmt: skip
        command = [*_command(workdir, 2), *extra]
        subprocess.run(command, check=True, env=env, capture_output=True)
        programs = sorted((cache_home / "aejax" / "jax").rglob("*-cache"))
        return losses(workdir), programs

    first, programs = train_in(tmp_path / "a", tmp_path / "cache")
    assert programs  # every program kept, however quick it was to compile
    again, programs_again = train_in(tmp_path / "b", tmp_path / "cache")
    assert again == first and programs_again == programs  # loaded: nothing new compiled
    off, none = train_in(tmp_path / "c", tmp_path / "off", "--no-compile-cache")
    assert off == first and none == []
    # One directory per jaxlib: an upgraded jax starts a cache of its own.
    assert {p.parent.name for p in programs} == {jaxlib.__version__}
    # The estimator keeps its programs there too, in a process of its own.
    fit = "import numpy as np; from aejax import AutoencoderDetector, data; " + (
        "AutoencoderDetector(epochs=1).fit(data.load('mnist', 'train[:600]')[0])"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "estimator")}
    subprocess.run([sys.executable, "-c", fit], check=True, env=env, capture_output=True)
    assert list((tmp_path / "estimator" / "aejax" / "jax" / jaxlib.__version__).glob("*-cache"))


def test_the_command_restarts_itself_with_huge_pages_for_large_images(tmp_path):
    # The same process (its id is kept across exec) comes to hold the tunable in its starting
    # environment; the run's numbers are those of a run started with it, or without (the
    # allocator changes no number).
    from aejax import xla

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if not xla.huge_pages_would_help(env):  # glibc too old, THP off or always on
        pytest.skip("huge pages need no restart here (not glibc 2.35+ with THP madvise)")
    images = np.random.default_rng(0).integers(0, 256, (300, 48, 48), np.uint8)
    np.save(tmp_path / "large.npy", images)
    dataset = str(tmp_path / "large.npy")
    # 128 images of 2,304 values a batch: enough. Its default batch (16) and MNIST's 28x28
    # digits (64 a device) are not.
    given = {"dataset": dataset, "arch": "dense"}
    assert training.huge_pages_pay(training.TrainRequest(given={**given, "batch_size": 128}))
    assert not training.huge_pages_pay(training.TrainRequest(given=given))
    assert not training.huge_pages_pay(training.TrainRequest(given={"arch": "conv"}))

    def command(workdir):
        return [sys.executable, "-m", "aejax.train", "--arch", "dense", "--dataset", dataset,
                "--batch-size", "128", "--epochs", "1", "--workdir", str(workdir)]  # fmt: skip

    process = subprocess.Popen(command(tmp_path / "a"), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen = ""
    while process.poll() is None and xla.HUGE_PAGES not in seen:
        try:
            seen = open(f"/proc/{process.pid}/environ").read()
        except OSError:
            break
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    assert xla.HUGE_PAGES in seen
    # Started with the tunable already (or turned off): no restart, the same numbers.
    for tunable in (xla.HUGE_PAGES, "glibc.malloc.hugetlb=0"):
        workdir = tmp_path / tunable.replace("=", "-")
        subprocess.run(command(workdir), env={**env, "GLIBC_TUNABLES": tunable},
                       check=True, capture_output=True)  # fmt: skip
        assert losses(workdir) == losses(tmp_path / "a")


def test_a_users_glibc_tunables_are_kept(monkeypatch):
    from aejax import xla

    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert not xla.huge_pages_would_help()  # the user's choice stands
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    if xla.huge_pages_would_help():
        executed = []
        monkeypatch.setattr(os, "execv", lambda path, argv: executed.append((path, argv)))
        xla.restart_with_huge_pages()
        assert os.environ["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{xla.HUGE_PAGES}"
        assert executed and executed[0][0] == sys.executable == executed[0][1][0]

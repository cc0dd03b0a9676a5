"""Bad input and faults, through the real command-line tools in subprocesses, on real files.

Every failure must be one ``error:`` line and exit code 2, never a traceback, and must lose
nothing saved. Filesystem faults use real filesystems: a tmpfs mounted read-only or too
small (needs root, as CI runs; skipped elsewhere).
"""

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from aejax import run
from tests.helpers import start_aejax, wait_for_checkpoint

pytestmark = pytest.mark.slow  # subprocesses, training, 8-device compiles

# 10k training images an epoch; a checkpoint every epoch (these tests damage and count them)
SMALL = ["--arch", "dense", "--holdout", "50000", "--checkpoint-every", "0"]


def cli(tool, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"aejax.{tool}", *map(str, args)],
        capture_output=True,
        text=True,
        **kwargs,
    )


def assert_one_error(result, *fragments):
    """Exit code 2, and stderr ends in exactly one ``error:`` line holding every fragment
    (progress lines such as "training ... on 1 CPU device" may come before it)."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines, result.stderr
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], lines
    assert lines[-1].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def epochs_done(workdir):
    return [
        json.loads(line)["epoch"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
    ]


def final_params(workdir):
    return jax.tree.leaves(jax.tree.map(np.asarray, run.restore(workdir)[0].params))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch dense run (checkpoints 1, 2, 3), copied by each test that damages it."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    result = cli("train", *SMALL, "--epochs", 3, "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    return workdir


def copy_of(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir


# --- options -----------------------------------------------------------------------------

OPTION_CASES = [
    ("train", ["--batch-size", "0"], ["--batch-size", ">= 1", "not 0"]),
    ("train", ["--batch-size", "-5"], ["--batch-size", ">= 1"]),
    ("train", ["--cpu-devices", "0"], ["--cpu-devices", ">= 1"]),
    ("train", ["--epochs", "-1"], ["--epochs", ">= 1"]),
    ("train", ["--latent-dim", "0"], ["--latent-dim", ">= 1"]),
    ("train", ["--lr", "0"], ["--lr", "> 0"]),
    ("train", ["--lr", "nan"], ["--lr", "> 0"]),
    ("train", ["--holdout", "many"], ["--holdout", "integer"]),
    ("train", ["--arch", "resnet"], ["--arch", "dense"]),
    ("train", ["--model", "depth"], ["--model", "NAME=VALUE"]),
    ("train", ["--checkpoint-every", "-1"], ["--checkpoint-every", ">= 0"]),
    ("eval", ["--threshold-percentile", "150"], ["--threshold-percentile", "[0, 100]"]),
    ("eval", ["--step", "0"], ["--step", "'latest'"]),
]


def test_every_option_is_checked_where_it_is_parsed(tmp_path):
    # All at once: each is a whole process start (mostly imports), and they are independent.
    started = []
    for i, (tool, args, fragments) in enumerate(OPTION_CASES):
        workdir = tmp_path / f"run{i}"
        process = subprocess.Popen(
            [sys.executable, "-m", f"aejax.{tool}", *args, "--workdir", str(workdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append((process, workdir, fragments))
    for process, workdir, fragments in started:
        out, err = process.communicate()
        result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        assert_one_error(result, *fragments)
        assert not workdir.exists()


def test_a_holdout_that_leaves_nothing_to_train_on(tmp_path):
    assert_one_error(
        cli("train", "--holdout", 60000, "--workdir", tmp_path / "run"),
        "--holdout 60000 must be in [0, 60000)",
    )


def test_a_dataset_smaller_than_a_batch_trains(tmp_path):
    # One training image, batch 256: the batch is padded and masked, nothing divides by 0.
    workdir = tmp_path / "run"
    result = cli("train", "--holdout", 59999, "--epochs", 2, "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    assert epochs_done(workdir) == [1, 2]
    assert "warning" not in result.stderr  # an untrained model (BCE ~ log 2) is no divergence


# --- the filesystem ----------------------------------------------------------------------


def test_a_workdir_that_is_a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("mine")
    assert_one_error(cli("train", *SMALL, "--workdir", path), str(path), "a file")
    assert_one_error(
        cli("train", *SMALL, "--workdir", path / "sub"), str(path / "sub"), "not a directory"
    )
    assert path.read_text() == "mine"


@contextlib.contextmanager
def tmpfs(path, options):
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_workdir_on_a_read_only_filesystem(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        assert_one_error(
            cli("train", *SMALL, "--workdir", ro / "run"), str(ro / "run"), "read-only filesystem"
        )


def test_a_full_disk_loses_nothing_and_the_run_resumes(tmp_path):
    straight = tmp_path / "straight"
    assert cli("train", *SMALL, "--epochs", 4, "--workdir", straight).returncode == 0
    # Room for the run's files and about one checkpoint (~300 kB of parameters and Adam).
    with tmpfs(tmp_path / "small", "size=600k") as small:
        workdir = small / "run"
        line = assert_one_error(
            cli("train", *SMALL, "--epochs", 4, "--workdir", workdir),
            "no space left",
            "run the same command again",
        )
        assert str(workdir) in line
        kept = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
        assert kept and all(p.isdigit() for p in map(str, kept))  # no half-written step
        assert not [p for p in workdir.rglob("*") if ".tmp" in p.name]
        assert epochs_done(workdir) == kept  # the records agree with what was saved
        run.restore(workdir, kept[-1])  # what was saved is intact

        # Once there is room, the same command resumes and ends where an uninterrupted
        # run ends, bit for bit.
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
        result = cli("train", *SMALL, "--epochs", 4, "--workdir", workdir)
        assert result.returncode == 0, result.stderr
        assert "resuming" in result.stderr
        assert epochs_done(workdir) == [1, 2, 3, 4]
        for a, b in zip(final_params(workdir), final_params(straight), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("room", ["40k", "80k"])  # full at the last write / at an earlier one
def test_a_full_disk_while_a_folder_is_prepared_is_one_line_and_the_command_works_later(
    tmp_path, room
):
    from PIL import Image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for i in range(300):  # noise compresses badly: ~300 kB of PNGs for TFDS to store
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), np.uint8)).save(pictures / f"{i}.png")
    command = ["--arch", "dense", "--dataset", pictures, "--epochs", 1,
               "--workdir", tmp_path / "run"]  # fmt: skip
    with tmpfs(tmp_path / "small", f"size={room}") as small:
        line = assert_one_error(
            cli("train", *command, "--data-dir", small), "no space left", "run the same command"
        )
        assert str(small / "aejax_folders") in line
        # Nothing half-written is left to be taken for a prepared dataset.
        assert not list(small.rglob("incomplete.*")) and not list(small.rglob("*.tfrecord*"))
        assert not list(small.rglob("dataset_info.json"))
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
        result = cli("train", *command, "--data-dir", small)
        assert result.returncode == 0, result.stderr


# --- damaged checkpoints -----------------------------------------------------------------


def damage_state(checkpoint):
    """Truncates every data file of a checkpoint's state."""
    files = [f for f in (checkpoint / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:10])


def assert_set_aside(result, workdir, step):
    """One warning line names the damaged checkpoint; it was moved, not deleted."""
    assert "Traceback" not in result.stderr and "absl" not in result.stderr, result.stderr
    # The set-aside warning (a short run may also warn that its loss was still falling).
    [warning] = [line for line in result.stderr.splitlines()
                 if line.startswith("warning:") and "cannot be read" in line]  # fmt: skip
    assert f"checkpoints/{step} cannot be read" in warning and "moved it to" in warning
    [aside] = (workdir / "damaged-checkpoints").iterdir()
    assert aside.name.startswith(f"{step}.") and (aside / "state").is_dir()


def test_eval_falls_back_from_a_damaged_latest_checkpoint(trained, tmp_path):
    workdir = copy_of(trained, tmp_path)
    (workdir / "checkpoints" / "3" / "meta" / "metadata").write_text("{ not json")
    result = cli("eval", "--workdir", workdir, "--ood", "uniform")
    assert result.returncode == 0, result.stderr
    assert_set_aside(result, workdir, 3)
    assert not (workdir / "checkpoints" / "3").exists()
    report = json.loads((workdir / "eval" / "report.json").read_text())
    assert report["checkpoint_step"] == 2


def test_training_resumes_from_the_newest_readable_checkpoint(trained, tmp_path):
    workdir = copy_of(trained, tmp_path)
    damage_state(workdir / "checkpoints" / "3")
    result = cli("train", *SMALL, "--epochs", 4, "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    assert_set_aside(result, workdir, 3)
    assert "resuming" in result.stderr and "from epoch 2" in result.stderr
    assert epochs_done(workdir) == [1, 2, 3, 4]


def test_asking_for_a_damaged_checkpoint_is_an_error(trained, tmp_path):
    workdir = copy_of(trained, tmp_path)
    damage_state(workdir / "checkpoints" / "3")
    assert_one_error(
        cli("eval", "--workdir", workdir, "--step", 3, "--ood", "uniform"),
        "checkpoints/3 cannot be read",
        "another step (1, 2)",
    )
    assert (workdir / "checkpoints" / "3").is_dir()  # asked for, so not moved


def test_no_readable_checkpoint_left(trained, tmp_path):
    for attempt in range(2):  # abandoned reads used to log after the error, at random
        workdir = copy_of(trained, tmp_path / str(attempt))
        for step in (1, 2, 3):
            damage_state(workdir / "checkpoints" / str(step))
        result = cli("eval", "--workdir", workdir, "--ood", "uniform")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert [line.split(" ")[0] for line in lines] == ["warning:"] * 3 + ["error:"], lines
        assert lines[-1].startswith("error: no readable checkpoint")
        assert len(list((workdir / "damaged-checkpoints").iterdir())) == 3


# --- errors never trail tracebacks from background threads ---------------------------------


@pytest.mark.parametrize("case", ["empty checkpoints", "batch does not split"])
def test_an_error_is_all_that_is_printed(tmp_path, case):
    workdir = tmp_path / "run"
    if case == "empty checkpoints":
        (workdir / "checkpoints").mkdir(parents=True)
        args, fragment = ("eval", "--workdir", workdir), "no checkpoint in"
    else:
        args, fragment = (
            ("train", *SMALL, "--batch-size", 255, "--cpu-devices", 2, "--workdir", workdir),
            "does not split over 2 devices",
        )
    for _ in range(3):  # Orbax's thread used to print after the error 2 times in 3
        assert_one_error(cli(*args), fragment)


# --- training that goes wrong --------------------------------------------------------------


def test_divergence_is_a_warning_on_the_epoch_it_happens(tmp_path):
    result = cli("train", *SMALL, "--epochs", 2, "--lr", "1e9", "--workdir", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings and warnings[0].startswith("warning: epoch 1: test BCE")
    assert "diverging: lower --lr" in warnings[0]


def test_a_healthy_run_prints_no_warning(trained):
    history = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    from aejax.train import divergence_warning

    assert all(divergence_warning(history[:i]) is None for i in range(1, len(history) + 1))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_says_so_and_resumes_bit_identically(trained, tmp_path, sig, code):
    workdir = tmp_path / "run"
    process = start_aejax(
        "train", *SMALL, "--epochs", 6, "--workdir", workdir, output=subprocess.PIPE
    )
    wait_for_checkpoint(process, workdir, 1)
    process.send_signal(sig)
    _, err = process.communicate()
    assert process.returncode == code and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted: ")

    straight = copy_of(trained, tmp_path / "straight")  # epochs 1-3, then 4-6 below
    for w in (workdir, straight):
        result = cli("train", *SMALL, "--epochs", 6, "--workdir", w)
        assert result.returncode == 0, result.stderr
    assert epochs_done(workdir) == [1, 2, 3, 4, 5, 6]
    for a, b in zip(final_params(workdir), final_params(straight), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_run_killed_between_interval_checkpoints_resumes_bit_identically(trained, tmp_path):
    # With the default --checkpoint-every (5 s), epoch 1 is saved and the next ones are not
    # until 5 s have passed: a kill in between loses them, and the resumed run trains them
    # again to the same bits as a run that saved every epoch (`trained`).
    workdir = tmp_path / "run"
    default_interval = SMALL[:-2]
    assert "--checkpoint-every" not in default_interval
    process = start_aejax("train", *default_interval, "--epochs", 1000, "--workdir", workdir)
    wait_for_checkpoint(process, workdir, 1)
    # Epochs beyond the checkpoint, none of them saved: waited for rather than slept on (a
    # loaded machine trains slower), and well before the next save is due, 5 s after it.
    deadline = time.monotonic() + 3
    while len(epochs_done(workdir)) <= 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1"]
    assert len(epochs_done(workdir)) > 2  # trained past it before the kill

    result = cli("train", *default_interval, "--epochs", 3, "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    assert "from epoch 1" in result.stderr
    assert epochs_done(workdir) == [1, 2, 3]
    for a, b in zip(final_params(workdir), final_params(trained), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_a_save_is_an_interruption_not_a_failure(tmp_path, sig, code):
    """The signal is delivered while Orbax is writing (where CI once caught SIGTERM and
    reported a failed save, exit 2): it stays an interruption and leaves no partial files."""
    import os

    from aejax import checkpoint
    from aejax import cli as aejax_cli

    checkpoints = checkpoint.Checkpoints(tmp_path / "checkpoints", background=False)
    manager_wait = checkpoints._manager.wait_until_finished

    def signalled_wait():
        os.kill(os.getpid(), sig)  # the handler runs at the next bytecode, inside the save
        return manager_wait()

    checkpoints._manager.wait_until_finished = signalled_wait
    state = {"w": np.ones((4, 4), np.float32)}
    code_returned = aejax_cli.run_command(lambda: checkpoints.save(1, state, {"epoch": 1}))
    assert code_returned == code
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name != "1"]
    assert not any(checkpoint.TMP_SUFFIX in name for name in leftovers), leftovers


def test_a_second_run_on_a_workdir_in_use_is_refused(tmp_path):
    workdir = tmp_path / "run"
    first = start_aejax("train", *SMALL, "--epochs", 1000, "--workdir", workdir)
    try:
        wait_for_checkpoint(first, workdir, 1)
        assert_one_error(
            cli("train", *SMALL, "--epochs", 1000, "--workdir", workdir),
            "is in use by",
            f"pid {first.pid}",
        )
        assert_one_error(cli("train", *SMALL, "--fresh", "--workdir", workdir), "in use")
        assert not list(tmp_path.glob("run.*"))  # --fresh moved nothing aside
    finally:
        first.kill()
        first.wait()
    # The kernel drops a killed run's lock: the workdir is usable again at once.
    result = cli("train", "--epochs", 1, "--workdir", workdir, "--fresh", *SMALL)
    assert result.returncode == 0, result.stderr


# --- installs --------------------------------------------------------------------------------


def test_the_environment_is_the_lock():
    """Every package the dev lock pins for this platform is installed at that version, so
    the tests ran on exactly the locked set (scripts/setup.sh installs from it)."""
    from importlib import metadata

    from packaging.markers import Marker
    from packaging.requirements import Requirement

    lock = Path(__file__).resolve().parent.parent / "requirements" / "dev.lock"
    pins = [
        Requirement(line.split(" \\")[0])
        for line in lock.read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    assert len(pins) > 50
    wrong = {}
    for pin in pins:
        if pin.marker is not None and not Marker(str(pin.marker)).evaluate():
            continue
        [version] = [s.version for s in pin.specifier]
        installed = metadata.version(pin.name)
        if installed != version:
            wrong[pin.name] = (installed, version)
    assert not wrong, f"installed vs locked: {wrong}"

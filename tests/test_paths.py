"""What a user types for a dataset: a path (``~`` too, as the shell leaves it in
``--dataset=~/x``), a TFDS name, or a mistake of either kind, told apart in one place
(aejax.data.sources.resolve): each mistake is one line naming what was typed."""

import numpy as np
import pytest

from aejax import data
from aejax.errors import AejaxError
from aejax.train import __main__ as train_cli
from tests.helpers import write_images


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("{tmp}/no_such_dir", "no_such_dir: no such folder or file"),
        ("{tmp}/typo.npy", "typo.npy: no such file"),
        ("typo.npy", "typo.npy: no such file"),
        ("fashion_mnist[:1000]", "without a split (fashion_mnist, not [:1000])"),
        ("no_such_dataset", "unknown dataset 'no_such_dataset' (no TFDS dataset, and no such"),
        ("mnist:1.0.0", "TFDS cannot open 'mnist:1.0.0': "),
    ],
)
def test_a_dataset_that_is_not_there_is_one_line_naming_it(spec, says, tmp_path, capsys):
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(AejaxError, match=None) as caught:
        data.source(spec).image_shape()
    assert says in str(caught.value) and "\n" not in str(caught.value)
    # The command says the same, as one error line, exit code 2.
    assert (
        train_cli.main(["--dataset", spec, "--epochs", "1", "--workdir", str(tmp_path / "r")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err, err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_leading_tilde_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_images(tmp_path / "my_images", 6, size=16)
    np.save(tmp_path / "batch.npy", np.zeros((4, 8, 8, 1), np.uint8))
    assert data.source("~/my_images").name == str(tmp_path / "my_images")
    assert data.source("~/batch.npy").name == str(tmp_path / "batch.npy")
    with pytest.raises(AejaxError, match=f"{tmp_path}/nothing: no such folder"):
        data.source("~/nothing")


@pytest.mark.slow
def test_a_depth_the_images_cannot_be_pooled_by_is_one_line(tmp_path, capsys):
    argv = ["--arch", "conv", "--model", "depth=6", "--epochs", "1", "--holdout", "50000"]
    assert train_cli.main([*argv, "--workdir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: this model turns 28x28x1 images into") and "\n" not in err
    assert "multiples of 64" in err


def test_distributed_without_a_cluster_is_one_line(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "TPU"))}
    command = [sys.executable, "-m", "aejax.train", "--distributed", "--epochs", "1",
               "--workdir", str(tmp_path / "r")]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert err.startswith("error: --distributed found no cluster to join") and "\n" not in err


@pytest.mark.parametrize("command", ["train", "eval", "score", "export"])
def test_a_url_where_a_path_goes_is_one_line(command, capsys):
    # Runs, reports and exports are written with file calls (atomic renames, locks): a gs://
    # workdir once became a local folder named "gs:"; it is refused before any work.
    from importlib import import_module

    main = import_module(f"aejax.{command}.__main__").main
    with pytest.raises(SystemExit) as exited:
        main(
            ["--workdir", "gs://bucket/runs/conv", *(["--out", "d"] if command == "export" else [])]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1 + err[0].startswith("usage"), err
    assert "not a URL (gs://bucket/runs/conv): mount the bucket" in err[-1]


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    from aejax import files

    target = tmp_path / "scores.csv"
    with files.atomic_path(target) as a, files.atomic_path(target) as b:
        assert a != b and a.suffix == b.suffix == ".csv"
        a.write_text("first job's rows\n")
        b.write_text("second job's rows\n")
    # The last to finish replaces the file whole; nothing temporary is left.
    assert target.read_text() == "first job's rows\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_score_out_a_folder_is_one_line_before_any_work(tmp_path):
    from aejax import score as scoring

    (tmp_path / "out").mkdir()
    request = scoring.ScoreRequest(inputs=("nothing.png",), workdir=tmp_path / "no-run",
                                   out=tmp_path / "out")  # fmt: skip
    with pytest.raises(AejaxError, match=r"--out .*/out is a folder: give the path of the file"):
        scoring.score_images(request)

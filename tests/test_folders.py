"""Folders of real image files (PNG/JPEG written here) as datasets, through the CLIs."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from aejax import data
from aejax.data import images as decoding
from aejax.data.sources import folder
from aejax.errors import AejaxError
from aejax.eval import __main__ as eval_cli
from aejax.train import __main__ as train_cli
from tests.helpers import shapes, write_images

pytestmark = pytest.mark.slow  # prepares datasets with TensorFlow, trains through the CLI


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    root = write_images(tmp_path_factory.mktemp("rgb") / "pictures", 300)
    (root / "notes.txt").write_text("not an image: ignored")
    return root


def test_a_flat_folder_becomes_a_tfds_dataset_split_by_path(rgb_folder, tmp_path):
    data_dir = str(tmp_path / "tfds")
    images, labels = data.load(str(rgb_folder), "train", data_dir)
    test_images, _ = data.load(str(rgb_folder), "test", data_dir)
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    assert len(images) + len(test_images) == 300 and 10 < len(test_images) < 60
    assert (labels == 0).all()
    # The decoded pixels are the files' pixels.
    first = sorted(p for p in rgb_folder.rglob("*.png"))
    decoded = {np.asarray(Image.open(p).convert("RGB")).tobytes() for p in first}
    assert images[0].tobytes() in decoded
    # Prepared once: the same folder reads from the same directory; a change prepares anew.
    prepared = data.source(str(rgb_folder), data_dir).prepared_dir()
    assert data.source(str(rgb_folder), data_dir).prepared_dir() == prepared
    write_images(rgb_folder / "more", 1, seed=9)
    assert data.source(str(rgb_folder), data_dir).prepared_dir() != prepared


def test_a_prepared_folder_is_read_without_tensorflow(tmp_path):
    import subprocess
    import sys

    root, data_dir = write_images(tmp_path / "pictures", 40), str(tmp_path / "tfds")
    first = data.load(str(root), "train", data_dir)[0]  # prepares it (with TensorFlow)
    child = (
        "import sys, numpy as np; from aejax import data; "
        f"x = data.load({str(root)!r}, 'train', {data_dir!r})[0]; "
        f"print(data.image_shape({str(root)!r}, {data_dir!r}), x.sum(), "
        "'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(32,", "32,", "3)", str(first.sum()), "False"]


def test_a_command_prepares_a_new_folder_in_a_child_process(tmp_path):
    """The commands (``decode_apart``) prepare and decode a folder seen for the first time in
    a child process, so TensorFlow never loads into theirs; they read the rows this process
    decodes itself, and a folder that cannot be prepared is the error it always was."""
    import subprocess
    import sys

    root, empty = write_images(tmp_path / "pictures", 40), tmp_path / "empty"
    empty.mkdir()
    child = (
        "import sys; from aejax import data; from aejax.data.sources.tfds import decode_apart\n"
        "decode_apart()\n"
        f"x = data.load({str(root)!r}, 'train', {str(tmp_path / 'tfds')!r}, "
        "image_size=(16, 16), channels=1)[0]\n"
        "print(x.shape, x.sum(), 'tensorflow' in sys.modules)\n"
        f"try: data.load({str(empty)!r}, 'train', {str(tmp_path / 'tfds')!r})\n"
        "except Exception as e: print(type(e).__name__, e)"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    here = data.load(str(root), "train", str(tmp_path / "here"), image_size=(16, 16), channels=1)
    first, error = out.stdout.splitlines()
    assert first == f"{here[0].shape} {here[0].sum()} False"
    assert error.startswith("AejaxError") and "holds no PNG/JPG/JPEG images" in error


def test_image_folder_layout_keeps_its_splits_and_labels(tmp_path):
    root = write_images(tmp_path / "classes", 40, size=20, mode="L", layout="imagefolder")
    images, labels = data.load(str(root), "train", str(tmp_path / "tfds"))
    test_images, _ = data.load(str(root), "test", str(tmp_path / "tfds"))
    assert images.shape == (32, 20, 20, 1) and len(test_images) == 8
    assert set(labels) == {0, 1}


def test_resizing_and_converting(tmp_path):
    root = tmp_path / "mixed"
    write_images(root / "a", 5, size=24, seed=1)
    write_images(root / "b", 5, size=40, seed=2)
    with pytest.raises(AejaxError, match="differ in size.*--image-size"):
        data.load(str(root), "train", str(tmp_path / "tfds"))
    images, _ = data.load(
        str(root), "train", str(tmp_path / "tfds"), image_size=[16, 12], channels=1
    )
    assert images.shape[1:] == (16, 12, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_files_are_stored_as_pillow_decodes_them_and_target_pngs_pass_through(tmp_path, channels):
    rng = np.random.default_rng(3)
    picture = shapes(rng, 16, "RGB")
    files = {
        "rgb.png": picture,
        "grey.png": picture.convert("L"),
        "grey_alpha.png": picture.convert("LA"),
        "bits.png": picture.convert("1"),
        "palette.png": picture.convert("P"),
        "alpha.png": picture.convert("RGBA"),
        "photo.jpg": picture,
        "large.png": picture.resize((20, 20)),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    target = "RGB" if channels == 3 else "L"
    for name in files:
        path = tmp_path / name
        stored = folder.png_bytes(path, (16, 16), channels)
        with Image.open(path) as opened:
            expected = decoding.convert(opened, (16, 16), channels)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), expected.squeeze(-1)
                              if channels == 1 else expected), name  # fmt: skip
        # The header pass reads PNG headers itself: it must agree with Pillow.
        with Image.open(path) as opened:
            seen = ((opened.height, opened.width), opened.mode not in decoding.GREY_MODES)
        assert decoding.header(path) == seen, name
        # A PNG already in the target size and mode is stored as the file's own bytes.
        passes = name.endswith(".png") and files[name].mode == target and name != "large.png"
        assert (stored == path.read_bytes()) == passes, name


def test_bad_folders_are_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AejaxError, match="holds no PNG/JPG/JPEG images"):
        data.load(str(tmp_path / "empty"), "train", str(tmp_path / "tfds"))
    broken = write_images(tmp_path / "broken", 5)
    (broken / "sub0" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(AejaxError, match=r"cannot read .*bad\.png as an image"):
        data.load(str(broken), "train", str(tmp_path / "tfds"))


def train_on(root, arch: str, tmp_path, workdir, holdout: int) -> int:
    """``python -m aejax.train`` (in process) on folder ``root``, one or two epochs."""
    return train_cli.main(
        ["--arch", arch, "--dataset", str(root), "--epochs", "2", "--holdout", str(holdout),
         "--data-dir", str(tmp_path / "tfds"), "--workdir", str(workdir)]
    )  # fmt: skip


def test_train_and_evaluate_conv_on_a_folder_of_rgb_pngs(rgb_folder, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert train_on(rgb_folder, "conv", tmp_path, workdir, holdout=50) == 0
    config = json.loads((workdir / "config.json").read_text())
    assert config["dataset"] == str(rgb_folder.resolve()) and config["model"]["channels"] == 3
    out = tmp_path / "eval"
    code = eval_cli.main(
        ["--workdir", str(workdir), "--ood", "uniform", "--data-dir", str(tmp_path / "tfds"),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["ood"]["uniform"]["auroc"] > 0.9
    assert (out / "reconstructions_uniform.png").stat().st_size > 0
    # Figure files are named by the folder's name, not its path.
    assert (out / "reconstructions_pictures.png").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []
    print(capsys.readouterr().out)


def test_a_size_conv_cannot_reconstruct_is_one_clear_error(tmp_path, capsys):
    root = write_images(tmp_path / "odd", 20, size=30, mode="L")
    assert train_on(root, "conv", tmp_path, tmp_path / "run", holdout=2) == 2
    assert "turns 30x30x1 images into 28x28x1" in capsys.readouterr().err
    # dense takes any shape.
    assert train_on(root, "dense", tmp_path, tmp_path / "dense", holdout=2) == 0

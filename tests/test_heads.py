"""The self-supervised head (aejax.models.heads): its transformations of known images, their
inverses, its labels, and the ``transform`` term of trained models on real MNIST digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import core, data, ood
from aejax.models import heads
from aejax.ood import joint

# A 2x2 image [[a, b], [c, d]] with four different values, as one batch of one grey image.
A, B, C, D = 1, 2, 3, 4
KNOWN = np.array([[A, B], [C, D]], np.float32)[None, :, :, None]
# Transformation t of [[a, b], [c, d]]: a horizontal flip if t >= 4, then t % 4
# counter-clockwise quarter turns.
EXPECTED = {
    0: [[A, B], [C, D]],
    1: [[B, D], [A, C]],  # a quarter turn counter-clockwise: the right column comes up
    2: [[D, C], [B, A]],
    3: [[C, A], [D, B]],
    4: [[B, A], [D, C]],  # the mirror image
    5: [[A, C], [B, D]],  # mirrored, then a quarter turn: the transpose
    6: [[C, D], [A, B]],  # mirrored, then a half turn: upside down
    7: [[D, B], [C, A]],
}


@pytest.mark.parametrize("t", range(heads.TRANSFORMS))
def test_each_transformation_of_a_known_image(t):
    got = np.asarray(heads.apply(jnp.asarray(KNOWN), t))[0, :, :, 0]
    np.testing.assert_array_equal(got, EXPECTED[t])


def test_every_transformation_has_its_inverse_among_them_and_they_differ():
    image = jnp.asarray(np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1))  # not square
    square = jnp.asarray(np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1))
    seen = {np.asarray(heads.apply(square, t)).tobytes() for t in range(8)}
    assert len(seen) == 8  # an image with no symmetry: eight different images
    for t in range(8):
        inverse = {0: 0, 1: 3, 2: 2, 3: 1}.get(t, t)  # turns undo turns; flips undo themselves
        np.testing.assert_array_equal(heads.apply(heads.apply(square, t), inverse), square)
    for t in heads.transformations((3, 4, 1)):  # those that keep a 3x4 image 3x4
        assert heads.apply(image, t).shape == image.shape


def test_the_labels_are_the_transformations_each_image_was_given():
    shape = (6, 6, 1)
    t_B = heads.sample(jax.random.key(0), shape, 4000)
    counts = np.bincount(np.asarray(t_B), minlength=8)
    assert counts.min() > 400  # every one of the eight, about equally often
    wide = np.asarray(heads.sample(jax.random.key(0), (6, 8, 1), 4000))
    assert set(wide.tolist()) == {0, 2, 4, 6}  # never a quarter turn of a non-square image
    x = jnp.asarray(np.random.default_rng(0).random((8, *shape), np.float32))
    t_B = jnp.arange(8)
    each = heads.apply_each(x, t_B)
    for i in range(8):
        np.testing.assert_array_equal(each[i], heads.apply(x[i : i + 1], i)[0])


def test_the_transform_term_is_the_mean_nll_of_the_true_transformations():
    digits, _ = data.load("mnist", "train[:8]")
    state = core.init_state("conv", jax.random.key(0), transform_head=True)
    got = core.per_image(state, digits, ("transform",))["transform"]
    model, x = state.model, digits.astype(np.float32) / 255
    want = np.zeros(len(x))
    for t in range(8):
        logits = model.transform_head(model.encode(heads.apply(jnp.asarray(x), t)))
        want -= np.asarray(jax.nn.log_softmax(logits))[:, t] / np.log(8) / 8
    np.testing.assert_allclose(got, want, rtol=1e-5)
    plain = core.init_state("conv", jax.random.key(0))
    assert not np.any(core.per_image(plain, digits, ("transform",))["transform"])
    # The head comes after the model's own parameters: the same autoencoder either way.
    without_head = {k: v for k, v in state.params.items() if k != "transform_head"}
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(without_head), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_trained_head_knows_which_way_up_its_training_digits_are():
    digits, labels = data.load("mnist", "train[:3000]")
    sevens = digits[labels == 7]
    state = core.init_state("dense", jax.random.key(0), transform_head=True)
    for epoch in range(40):
        state, metrics = core.train_epoch(state, jax.device_put(sevens), jax.random.key(epoch))
    term = core.per_image(state, sevens, ("transform", "bce"))["transform"]
    # A training image: its true transformations are likely (an untrained head's term is 1).
    assert float(np.median(term)) < 0.5
    # A seven's mirror image is no seven the head knows the way up of.
    mirrored = np.asarray(heads.apply(jnp.asarray(sevens), 4)).astype(np.uint8)
    other = core.per_image(state, mirrored, ("transform",))["transform"]
    assert float(np.median(other)) > 2 * float(np.median(term))
    assert "transform" in ood.names() and "typ-transform" in ood.names()


@pytest.mark.slow
def test_the_estimator_trains_the_head_and_its_term_joins_joint(tmp_path):
    import pickle

    from aejax import AutoencoderDetector

    digits, _ = data.load("mnist", "train[:1500]")
    det = AutoencoderDetector("dense", epochs=3, transform_head=True).fit(digits)
    assert det.detector_.config.transform_head and det.get_params()["transform_head"]
    clothes, _ = data.load("fashion_mnist", "test[:200]")
    every = det.detector_.detect(clothes, every=True)
    assert np.ptp(every["transform"]) > 0  # the head's term, image by image
    # joint's Gaussian has a row for it: a statistic with spread on the held-out images.
    position = joint.STATISTICS.index("z-transform")
    assert np.any(det.detector_.stats.fitted["joint"]["whitening"][position])
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.decision_function(clothes), det.decision_function(clothes))
    np.testing.assert_array_equal(det.decision_function(clothes), every["score"])

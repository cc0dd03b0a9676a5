"""Losses against plain NumPy formulas."""

import jax
import jax.numpy as jnp
import numpy as np

from aejax import losses


def numpy_bce(logits, targets):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per_pixel = -(targets * np.log(p) + (1 - targets) * np.log1p(-p))
    return per_pixel.reshape(len(logits), -1).mean(axis=1)


def test_bce_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4, size=(8, 28, 28, 1)).astype(np.float32)
    targets = rng.integers(0, 256, size=(8, 28, 28, 1)) / np.float32(255)
    got = losses.bce_per_example(jnp.asarray(logits), jnp.asarray(targets, jnp.float32))
    np.testing.assert_allclose(got, numpy_bce(logits, targets), rtol=1e-5)


def test_bce_is_finite_for_saturated_logits():
    logits = jnp.array([[100.0, -100.0, 60.0, -60.0]])
    targets = jnp.array([[1.0, 0.0, 0.0, 1.0]])
    got = float(losses.bce_per_example(logits, targets)[0])
    assert np.isfinite(got)
    np.testing.assert_allclose(got, (0 + 0 + 60 + 60) / 4, rtol=1e-6)


def test_bce_minimum_is_the_targets_entropy():
    targets = jnp.array([[0.0, 1.0, 0.3, 0.5]])
    # sigmoid(logits) = targets (+-40 stand for -+inf: their loss is below 1e-17).
    logits = jnp.array([[-40.0, 40.0, np.log(0.3 / 0.7), 0.0]])
    t = np.array([0.3, 0.5])
    entropy = -(t * np.log(t) + (1 - t) * np.log(1 - t)).sum() / 4
    np.testing.assert_allclose(losses.bce_per_example(logits, targets), [entropy], rtol=1e-5)


def test_mse_matches_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 10)).astype(np.float32)
    targets = rng.uniform(size=(3, 10)).astype(np.float32)
    expected = ((1 / (1 + np.exp(-logits)) - targets) ** 2).mean(axis=1)
    np.testing.assert_allclose(losses.mse_per_example(logits, targets), expected, rtol=1e-5)


def test_bce_gradient_is_sigmoid_minus_target_over_pixels():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=8, size=(4, 784)).astype(np.float32)
    targets = rng.integers(0, 256, size=(4, 784)) / np.float32(255)
    grad = jax.grad(lambda z: losses.bce_per_example(z, jnp.asarray(targets)).sum())(
        jnp.asarray(logits)
    )
    expected = (1 / (1 + np.exp(-logits.astype(np.float64))) - targets) / 784
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-10)

"""aejax.reductions.accurate_mean against float64, other orders, fused programs and
onnxruntime."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import reductions

mean_over_pixels = jax.jit(reductions.accurate_mean, static_argnums=1)


def activations(rng) -> list[np.ndarray]:
    """Three kinds of [B, H, W, C] values: after a ReLU, errors of every size, and values of
    both signs and twelve orders of magnitude that cancel."""
    shape = (16, 14, 14, 30)
    cases = [
        np.maximum(rng.normal(0.3, 0.3, shape), 0),
        np.exp(rng.normal(-3, 3, shape)),
        rng.normal(0, 1, shape) * 10.0 ** rng.integers(-6, 7, shape),
    ]
    return [c.astype(np.float32) for c in cases]


def test_accurate_mean_is_the_exact_mean_rounded_whatever_the_order():
    rng = np.random.default_rng(0)
    for x in activations(rng):
        exact = x.astype(np.float64).mean(axis=(1, 2))
        got = np.asarray(mean_over_pixels(x, (1, 2)))
        # Within three roundings (the sum's, 1/n's and the product's) of the mean of the
        # float32 values: a float32 sum of 196 values rounds 195 times.
        np.testing.assert_allclose(got, exact, rtol=3 * 2.0**-24, atol=0)
        shuffled = x[:, rng.permutation(14)][:, :, rng.permutation(14)]
        reordered = np.asarray(mean_over_pixels(shuffled, (1, 2)))
        np.testing.assert_array_max_ulp(reordered, got, maxulp=1)
        # Ties only: about 1 mean in 500 of positive values, 1 in 150 where values cancel.
        assert np.mean(reordered != got) < 0.03


def test_accurate_mean_keeps_its_bits_inside_a_fused_program():
    # XLA:CPU contracts a multiplication and the addition after it into one fused
    # multiply-add where it fuses them; the mean must round alike fused or not.
    rng = np.random.default_rng(1)
    x = rng.random((4096, 784), dtype=np.float32)
    offset = rng.random(4096, dtype=np.float32)
    alone = np.asarray(mean_over_pixels(x, 1))
    fused = jax.jit(lambda x, o: jnp.log(reductions.accurate_mean(x, 1) + o))(x, offset)
    np.testing.assert_array_equal(np.asarray(fused), np.asarray(jnp.log(alone + offset)))


def test_accurate_mean_of_infinite_and_nan_values_is_the_plain_mean():
    x = np.float32([[np.inf, 1.0], [np.nan, 1.0], [-np.inf, 3.0], [0.0, 0.0], [3e38, 3e38]])
    got = np.asarray(reductions.accurate_mean(x, 1))
    np.testing.assert_array_equal(got, [np.inf, np.nan, -np.inf, 0.0, np.inf])


def test_onnxruntime_gives_the_accurate_mean_bit_for_bit():
    # What the exported detector's pooled features rest on (whole detectors: test_score.py).
    pytest.importorskip("onnxruntime")
    import onnxruntime
    from jax2onnx import to_onnx

    x = activations(np.random.default_rng(2))[0]
    spec = jax.ShapeDtypeStruct(("N", 14, 14, 30), jnp.float32)
    model = to_onnx(lambda x: reductions.accurate_mean(x, (1, 2)), inputs=[spec])
    session = onnxruntime.InferenceSession(model.SerializeToString())
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(got, np.asarray(mean_over_pixels(x, (1, 2))))

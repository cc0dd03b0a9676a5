"""The CPU backend's kernels against the XLA/flax operations they replace, values and
gradients (on CPU these run the hand-written forms; lax.conv is the reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aejax.backend.conv3x3 import (
    _interleave,
    _phase,
    conv3x3,
    conv3x3_pool_bias_relu,
    upsample_2x2,
)
from aejax.backend.pooling import pool_bias_relu

RTOL = 2e-6  # float32 sums in another order


def rel_err(a, b):
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())


def reference_conv(x_CxBxHxW, w_HWIO, upsampled):
    x = upsample_2x2(x_CxBxHxW) if upsampled else x_CxBxHxW
    return jax.lax.conv_general_dilated(
        x, w_HWIO, (1, 1), "SAME", dimension_numbers=("CNHW", "HWIO", "CNHW")
    )


@pytest.mark.parametrize("upsampled", [False, True])
@pytest.mark.parametrize(
    "cin, cout",
    [
        (3, 2),
        *(
            pytest.param(*c, marks=pytest.mark.slow)
            for c in [(1, 30), (30, 15), (15, 15), (15, 30), (30, 1)]
        ),
    ],
)
def test_conv3x3_matches_lax_conv(cin, cout, upsampled):
    rng = np.random.default_rng(cin * 100 + cout)
    x = jnp.asarray(rng.normal(size=(cin, 3, 6, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
    y, vjp = jax.vjp(lambda x, w: conv3x3(x, w, upsampled), x, w)
    y_ref, vjp_ref = jax.vjp(lambda x, w: reference_conv(x, w, upsampled), x, w)
    assert y.shape == y_ref.shape == (cout, 3, 6 * (1 + upsampled), 4 * (1 + upsampled))
    assert rel_err(y, y_ref) < RTOL
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for got, want in zip(vjp(g), vjp_ref(g), strict=True):
        assert rel_err(got, want) < RTOL


def flax_pool(h_CxBxHxW):
    """flax's max_pool (reduce_window; select-and-scatter gradient), channels first."""
    pooled = nnx.max_pool(h_CxBxHxW.transpose(1, 2, 3, 0), (2, 2), strides=(2, 2))
    return pooled.transpose(3, 0, 1, 2)


def with_ties(h):
    # Exact ties inside windows, where "first maximum" decides who gets the gradient.
    return h.at[:, :, 0, 0].set(h[:, :, 0, 1]).at[:, :, 2, 2].set(h[:, :, 3, 3])


def test_pool_bias_relu_matches_flax_max_pool_with_ties():
    rng = np.random.default_rng(0)
    h = with_ties(jnp.asarray(rng.normal(size=(3, 4, 6, 8)), jnp.float32))
    b = jnp.asarray(rng.normal(size=(3,)), jnp.float32)

    def reference(h, b):
        return flax_pool(jax.nn.relu(h + b[:, None, None, None]))

    y, vjp = jax.vjp(pool_bias_relu, h, b)
    y_ref, vjp_ref = jax.vjp(reference, h, b)
    np.testing.assert_array_equal(y, y_ref)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    (dh, db), (dh_ref, db_ref) = vjp(g), vjp_ref(g)
    np.testing.assert_array_equal(dh, dh_ref)
    np.testing.assert_allclose(db, db_ref, rtol=1e-5)


@pytest.mark.parametrize("cin, cout", [pytest.param(1, 30, marks=pytest.mark.slow), (2, 3)])
def test_conv3x3_pool_bias_relu_matches_conv_then_flax_pool(cin, cout):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(cin, 3, 8, 6)), jnp.float32)
    # Zero rows in the input make exactly tied convolution outputs (as MNIST's blank borders
    # do), where "first maximum" decides who gets the gradient.
    x = x.at[:, :, :3].set(0.0)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(cout,)), jnp.float32)

    def reference(x, w, b):
        return flax_pool(jax.nn.relu(reference_conv(x, w, False) + b[:, None, None, None]))

    y, vjp = jax.vjp(conv3x3_pool_bias_relu, x, w, b)
    y_ref, vjp_ref = jax.vjp(reference, x, w, b)
    assert rel_err(y, y_ref) < RTOL
    # Called without a gradient it may take another form (2 -> 3: the split convolution).
    assert rel_err(conv3x3_pool_bias_relu(x, w, b), y_ref) < RTOL
    assert 0 < float(jnp.mean(y > 0)) < 1  # both sides of the relu are exercised
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for got, want in zip(vjp(g), vjp_ref(g), strict=True):
        assert rel_err(got, want) < RTOL


def test_upsample_is_nearest_neighbour():
    x = jnp.arange(2 * 1 * 2 * 3, dtype=jnp.float32).reshape(2, 1, 2, 3)
    np.testing.assert_array_equal(upsample_2x2(x), jnp.repeat(jnp.repeat(x, 2, 2), 2, 3))


def test_interleave_and_phase_are_inverse():
    x = jnp.arange(2 * 3 * 4 * 6, dtype=jnp.float32).reshape(2, 3, 4, 6)
    phases = [_phase(x, 4, k) for k in range(4)]
    np.testing.assert_array_equal(phases[1], x[:, :, 0::2, 1::2])  # even rows, odd columns
    np.testing.assert_array_equal(_interleave(phases), x)


def test_the_split_forward_pass_exports_to_onnx_as_computed():
    # The fused convolution-pool of similar channel counts scores through the split form
    # (no gradient); export traces that forward pass (whole detectors: test_score.py, whose
    # reference conv net has no such layer).
    pytest.importorskip("onnxruntime")
    import onnxruntime
    from jax2onnx import to_onnx

    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 2, 8, 10)).astype(np.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 6, 8)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(8,)), jnp.float32)

    def layer(x_CxBxHxW):
        return conv3x3_pool_bias_relu(x_CxBxHxW, w, b)

    model = to_onnx(layer, inputs=[jax.ShapeDtypeStruct(x.shape, jnp.float32)])
    session = onnxruntime.InferenceSession(model.SerializeToString())
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = flax_pool(jax.nn.relu(reference_conv(x, w, False) + b[:, None, None, None]))
    assert rel_err(got, want) < RTOL

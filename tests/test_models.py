"""The reference architectures: sizes, shapes, initialisation, the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aejax import core, models
from aejax.errors import AejaxError
from aejax.losses import bce_per_example


@pytest.mark.parametrize("arch, count", [("dense", 24_319), ("conv", 10_756)])
def test_parameter_counts_match_the_reference(arch, count):
    assert core.param_count(core.init_state(arch, jax.random.key(0))) == count


@pytest.mark.parametrize("arch, code_shape", [("dense", (5, 15)), ("conv", (5, 7, 7, 15))])
def test_encode_and_decode_work_alone(arch, code_shape):
    state = core.init_state(arch, jax.random.key(0))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), np.uint8))
    codes = core.encode(state, images)
    assert codes.shape == code_shape
    decoded = core.decode(state, codes)
    assert decoded.shape == (5, 28, 28, 1)
    assert float(decoded.min()) >= 0 and float(decoded.max()) <= 1
    # decode(encode(x)) is the reconstruction.
    np.testing.assert_allclose(decoded, core.reconstruct(state, images), rtol=1e-6)
    # Decoding codes that no image produced works too (the decoder is a generator).
    assert core.decode(state, jnp.ones(code_shape)).shape == (5, 28, 28, 1)


@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_the_training_loss_is_the_bce_of_the_reconstruction(arch):
    state = core.init_state(arch, jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)) / 255, jnp.float32)
    model = state.model
    loss_B, _ = model.loss(x, jax.random.key(1))
    np.testing.assert_allclose(loss_B, bce_per_example(model(x), x), rtol=1e-6)
    assert model(x).shape == (5, 28, 28, 1)


def test_latent_dim_option_changes_the_code():
    state = core.init_state("dense", jax.random.key(0), latent_dim=32)
    assert core.encode(state, jnp.zeros((2, 28, 28, 1))).shape == (2, 32)
    assert core.param_count(state) == 784 * 32 + 32 + 32 * 784 + 784


def test_keras_initialisation():
    model = models.create("conv", rngs=nnx.Rngs(0))
    # Glorot uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)), fan = 3*3*channels.
    kernel = np.asarray(model.encoder.layers[3].kernel[...])
    limit = np.sqrt(6 / (9 * 30 + 9 * 15))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
    assert np.std(kernel) == pytest.approx(limit / np.sqrt(3), rel=0.05)
    assert not np.any(model.encoder.layers[3].bias[...])


def test_registry_lists_and_rejects():
    assert {"dense", "conv"} <= set(models.names())
    with pytest.raises(AejaxError, match="unknown --arch 'mlp'.*dense"):
        models.get("mlp")
    with pytest.raises(AejaxError, match="takes no option"):
        models.create("dense", rngs=nnx.Rngs(0), width=3)


def _images(n=4, seed=0):
    return jnp.asarray(
        np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1)) / 255.0, jnp.float32
    )


def test_sparse_adds_the_l1_of_the_code_to_the_training_loss_only():
    x = _images()
    sparse = models.create("sparse", rngs=nnx.Rngs(0), l1=0.01)
    dense = models.create("dense", rngs=nnx.Rngs(0))  # the same parameters
    loss_B, aux = sparse.loss(x, jax.random.key(0))
    np.testing.assert_allclose(aux["bce"], dense.loss(x, jax.random.key(0))[0], rtol=1e-6)
    l1_B = 0.01 * jnp.sum(jnp.abs(sparse.encode(x)), axis=-1)
    np.testing.assert_allclose(aux["l1"], l1_B, rtol=1e-6)
    np.testing.assert_allclose(loss_B, aux["bce"] + l1_B, rtol=1e-6)
    assert float(l1_B.min()) > 0
    # Evaluation reconstructs as the dense net does: the penalty is not part of the score.
    np.testing.assert_array_equal(sparse(x), dense(x))


def test_denoising_trains_on_noisy_inputs_against_clean_targets():
    x = _images()
    denoising = models.create("denoising", rngs=nnx.Rngs(0))
    conv = models.create("conv", rngs=nnx.Rngs(0))
    key = jax.random.key(1)
    loss_B, _ = denoising.loss(x, key)
    np.testing.assert_array_equal(loss_B, denoising.loss(x, key)[0])  # the key decides
    assert not np.allclose(loss_B, denoising.loss(x, jax.random.key(2))[0])
    # What the loss sees is clip(x + 0.5 N(0, 1)), reconstructed towards the clean x.
    noisy = jnp.clip(x + 0.5 * jax.random.normal(key, x.shape), 0, 1)
    np.testing.assert_allclose(loss_B, bce_per_example(conv(noisy), x), rtol=1e-5)
    # Without noise it is the conv net's loss; evaluation never adds noise.
    quiet = models.create("denoising", rngs=nnx.Rngs(0), noise=0.0)
    np.testing.assert_allclose(quiet.loss(x, key)[0], conv.loss(x, key)[0], rtol=1e-6)
    np.testing.assert_array_equal(denoising(x), conv(x))


def test_vae_minimises_the_negative_elbo_of_a_reparameterised_sample():
    x = _images()
    vae = models.create("vae", rngs=nnx.Rngs(0))
    mean, log_var = vae.posterior(x)
    np.testing.assert_array_equal(vae.encode(x), mean)  # the code is the posterior mean
    kl_B = 0.5 * np.sum(np.exp(log_var) + np.square(mean) - 1 - log_var, axis=-1) / 784
    np.testing.assert_allclose(vae.prior_term(x), kl_B, rtol=1e-5)
    key = jax.random.key(3)
    loss_B, aux = vae.loss(x, key)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    np.testing.assert_allclose(aux["bce"], bce_per_example(vae.decode(z), x), rtol=1e-5)
    np.testing.assert_allclose(loss_B, aux["bce"] + kl_B, rtol=1e-5)
    assert not np.allclose(loss_B, vae.loss(x, jax.random.key(4))[0])  # sampled
    # Models without a prior on the code add nothing.
    np.testing.assert_array_equal(models.create("dense", rngs=nnx.Rngs(0)).prior_term(x), 0.0)


@pytest.mark.slow  # compiles a 64x64 conv net
def test_conv_scales_with_depth_and_width_and_keeps_the_tutorial_by_default():
    tutorial = core.init_state("conv", jax.random.key(0))
    assert core.param_count(tutorial) == 10_756 and len(tutorial.model.encoder.layers) == 6
    state = core.init_state("conv", jax.random.key(0), depth=3, width=16, channels=3)
    x = jnp.zeros((2, 64, 64, 3))
    assert core.encode(state, x).shape == (2, 8, 8, 15)
    assert core.reconstruct(state, x).shape == x.shape
    core.check_image_shape(state, (64, 64, 3))
    with pytest.raises(AejaxError, match="turns 36x36x3 images into 32x32x3"):
        core.check_image_shape(state, (36, 36, 3))
    with pytest.raises(AejaxError, match="takes no option.*colour; its options: latent_dim"):
        core.init_state("conv", jax.random.key(0), colour=3)

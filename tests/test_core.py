"""The pure training core on tiny synthetic data and on real MNIST."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aejax import core, data, models
from tests.test_losses import numpy_bce


def random_images(n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), np.uint8))


def params_equal(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def mnist_test():
    return jax.device_put(data.load("mnist", "test")[0])


@pytest.mark.parametrize("arch", ["dense", pytest.param("conv", marks=pytest.mark.slow)])
def test_a_few_steps_reduce_the_loss_on_mnist(arch, mnist_test):
    state = core.init_state(arch, jax.random.key(0))
    images = mnist_test[:2048]
    before = float(core.eval_loss(state, images))
    for i in range(20):
        state, _ = core.train_step(state, images[i * 64 : (i + 1) * 64])
    after = float(core.eval_loss(state, images))
    assert after < before - 0.05, (before, after)
    assert int(state.step) == 20


def test_epoch_order_covers_every_example_once():
    order = core.epoch_order(jax.random.key(3), 1000, 256)
    assert order.shape == (4, 256)
    assert sorted(order[order >= 0].tolist()) == list(range(1000))
    assert (order[-1, 1000 - 768 :] == -1).all() and (order[:-1] >= 0).all()


def test_masked_ragged_batch_equals_training_on_it():
    """The padded, masked last batch gives the update Keras' ragged batch would."""
    images = random_images(40)
    state = core.init_state("dense", jax.random.key(0))
    ragged, _ = core.train_step(jax.tree.map(jnp.copy, state), images[:24])
    padded = jnp.concatenate([images[:24], images[24:]])
    weights = jnp.concatenate([jnp.ones(24), jnp.zeros(16)])
    masked, metrics = core.train_step(state, padded, weights)
    assert float(metrics["count"]) == 24
    for a, b in zip(jax.tree.leaves(ragged.params), jax.tree.leaves(masked.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_train_epoch_is_deterministic_and_counts_every_example():
    images = random_images(300)
    runs = []
    for _ in range(2):
        state = core.init_state("dense", jax.random.key(0))
        state, metrics = core.train_epoch(state, images, jax.random.key(1), batch_size=64)
        runs.append((state, float(metrics["loss"])))
    assert runs[0][1] == runs[1][1]
    assert params_equal(runs[0][0].params, runs[1][0].params)
    assert int(runs[0][0].step) == 5  # ceil(300 / 64): the ragged tail is trained on
    other, _ = core.train_epoch(
        core.init_state("dense", jax.random.key(0)), images, jax.random.key(2), batch_size=64
    )
    assert not params_equal(other.params, runs[0][0].params)  # the key shuffles


def test_score_is_per_image_bce_in_any_batching():
    images = random_images(23)
    state = core.init_state("conv", jax.random.key(0))
    scores = core.score(state, images, batch_size=5)  # ragged: 5 batches, last one of 3
    assert scores.shape == (23,)
    logits = np.log(np.asarray(core.reconstruct(state, images), np.float64))
    logits -= np.log1p(-np.exp(logits))  # back from probabilities
    expected = numpy_bce(logits, np.asarray(images) / 255)
    np.testing.assert_allclose(scores, expected, rtol=2e-5)
    np.testing.assert_allclose(core.score(state, images, batch_size=23), scores, rtol=1e-6)
    np.testing.assert_allclose(core.eval_loss(state, images), expected.mean(), rtol=2e-5)
    mse = core.score(state, images, term="mse", batch_size=4)
    expected_mse = (np.asarray(core.reconstruct(state, images)) - images / 255) ** 2
    np.testing.assert_allclose(mse, expected_mse.reshape(23, -1).mean(1), rtol=1e-5)


def test_batched_evens_out_its_batches_instead_of_padding():
    calls = []

    def fn(x_BxHxWxC):
        calls.append(x_BxHxWxC.shape[0])  # traced once: the batch size used
        return jnp.sum(x_BxHxWxC.astype(jnp.float32), axis=(1, 2, 3))

    images = random_images(12)
    sums = core.batched(fn, images, batch_size=5)  # not 3 of 5 (3 padded) but 3 of 4
    assert calls == [4]
    np.testing.assert_array_equal(sums, np.asarray(images, np.float32).sum(axis=(1, 2, 3)))
    calls.clear()
    sums = core.batched(fn, random_images(11), batch_size=5)  # 3 of 4, the last one padded
    assert calls == [4] and sums.shape == (11,)


def test_state_is_a_pytree_that_jit_donates():
    state = core.init_state("dense", jax.random.key(0))
    before = state.params["encoder"]["layers"][1]["kernel"][...]
    new_state, _ = core.train_step(state, random_images(8))
    assert not np.array_equal(new_state.params["encoder"]["layers"][1]["kernel"][...], before)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


@pytest.mark.parametrize("arch", ["dense", "conv", "sparse", "denoising", "vae"])
def test_init_state_is_flax_eager_initialisation_bit_for_bit(arch):
    # init_state runs as one program compiled with LLVM's optimisation off (a first run's
    # compile time): the same arrays as flax's eager layer-by-layer initialisation.
    key = jax.random.key(3)
    state = core.init_state(arch, key)
    init_key, train_key = jax.random.split(key)
    eager = nnx.split(models.create(arch, rngs=nnx.Rngs(params=init_key)), nnx.Param)[1]
    assert jax.tree.structure(state.params) == jax.tree.structure(eager)
    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(eager), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(state.rng, jax.random.key_data(train_key))
    assert models.names() and set(models.names()) == {"dense", "conv", "sparse", "denoising", "vae"}


def test_init_state_traces_into_a_callers_jit():
    # JAX refuses compiler options on a nested jit: quick_jit is then traced like any other.
    key = jax.random.key(4)
    nested = jax.jit(lambda k: core.init_state("dense", k))(key)
    alone = core.init_state("dense", key)
    for a, b in zip(jax.tree.leaves(nested.params), jax.tree.leaves(alone.params), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 2**31 + 5, 2**32 - 1])
def test_run_keys_are_the_halves_of_the_seeds_split(seed):
    from aejax import run_state

    halves = jax.random.split(jax.random.key(seed))
    np.testing.assert_array_equal(
        jax.random.key_data(run_state.init_key(seed)), jax.random.key_data(halves[0])
    )
    np.testing.assert_array_equal(
        jax.random.key_data(run_state.epoch_key(seed, 3)),
        jax.random.key_data(jax.random.fold_in(halves[1], 3)),
    )
    many = jax.vmap(run_state.init_key)(jnp.asarray([seed, 7], jnp.uint32))
    np.testing.assert_array_equal(jax.random.key_data(many[0]), jax.random.key_data(halves[0]))

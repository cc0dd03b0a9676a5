"""The CPU backend runs the same layers and parameters as flax: outputs and gradients agree.

Forced with ``backend.use("cpu")`` against ``backend.use("plain")`` (flax's layers as
written), on random inputs of several shapes, for the reference models, for Sequentials the
backend only partly knows, and through ``jax.lax.platform_dependent`` lowered for CPU, CUDA
and TPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aejax import backend, core
from aejax.models.layers import Flatten, MaxPool, UpSample

RTOL = 1e-5  # float32 sums in another order


def assert_close(got, want):
    scale = max(float(jnp.abs(want).max()), 1e-6)
    assert float(jnp.abs(got - want).max()) / scale < RTOL


def outputs_and_grads(model, x):
    """``model(x)`` and the gradients of a random projection of it, wrt params and x."""
    graphdef, params = nnx.split(model)
    probe = jax.random.normal(jax.random.key(9), nnx.merge(graphdef, params)(x).shape)

    def f(params, x):
        y = nnx.merge(graphdef, params)(x)
        return jnp.sum(y * probe), y

    (_, y), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(params, x)
    return y, grads


def assert_backends_agree(model, x):
    with backend.use("plain"):
        want = outputs_and_grads(model, x)
    with backend.use("cpu"):
        got = outputs_and_grads(model, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape
        assert_close(a, b)


def conv(cin, cout, rngs, **kw):
    return nnx.Conv(cin, cout, (3, 3), padding="SAME", rngs=rngs, **kw)


SLOW = pytest.mark.slow  # a compile of the conv net's gradient, plain and fast, each


@pytest.mark.parametrize("shape", [pytest.param((3, 28, 28, 1), marks=SLOW), (1, 4, 4, 1)])
def test_the_conv_net_agrees(shape):
    model = core.init_state("conv", jax.random.key(0)).model
    assert_backends_agree(model, jax.random.uniform(jax.random.key(1), shape))


@SLOW
@pytest.mark.parametrize("shape", [(2, 16, 8, 3)])
def test_the_conv_net_with_several_channels_agrees(shape):
    model = core.init_state(
        "conv", jax.random.key(0), channels=shape[-1], width=8, latent_dim=5
    ).model
    assert_backends_agree(model, jax.random.uniform(jax.random.key(1), shape))


def test_the_dense_net_agrees():
    model = core.init_state("dense", jax.random.key(0)).model
    assert_backends_agree(model, jax.random.uniform(jax.random.key(1), (5, 28, 28, 1)))


# 9: the first pooling has an odd input, which only flax pools
@pytest.mark.parametrize("size", [pytest.param(10, marks=SLOW), 9])
def test_layers_it_does_not_know_run_as_written(size):
    rngs, pooled = nnx.Rngs(0), size // 2 * 2 // 2
    model = nnx.Sequential(
        conv(3, 6, rngs),
        nnx.relu,
        MaxPool(2),
        nnx.Conv(6, 4, (5, 5), rngs=rngs),  # 5x5: no CPU kernel
        jnp.tanh,  # not in the backend's list of elementwise layers
        conv(4, 4, rngs),
        UpSample(2),
        conv(4, 4, rngs),
        nnx.relu,
        MaxPool(2),
        Flatten(),
        nnx.Linear(pooled * pooled * 4, 3, rngs=rngs),
    )
    assert_backends_agree(model, jax.random.uniform(jax.random.key(1), (2, size, size, 3)))


def test_max_pool_ties_send_the_gradient_to_the_first_maximum():
    # Constant images: every pooling window is a tie.
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        conv(1, 4, rngs), nnx.relu, MaxPool(2), conv(4, 2, rngs), nnx.relu, MaxPool(2)
    )
    assert_backends_agree(model, jnp.full((2, 8, 8, 1), 0.5))


@SLOW
def test_mixed_precision_runs_in_the_parameters_dtype():
    model = core.init_state("conv", jax.random.key(0)).model
    graphdef, params = nnx.split(model)
    bf16 = nnx.merge(graphdef, jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))
    x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1), jnp.bfloat16)
    with backend.use("cpu"):
        got = bf16(x)
    with backend.use("plain"):
        want = bf16(x)
    assert got.dtype == want.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(got), np.float32(want), atol=0.05)


def test_auto_is_the_cpu_backend_on_cpu_and_flax_elsewhere():
    model = core.init_state("conv", jax.random.key(0)).model
    x = jnp.zeros((2, 28, 28, 1))
    hlo = {
        platform: jax.jit(model).trace(x).lower(lowering_platforms=(platform,)).as_text()
        for platform in ("cpu", "cuda", "tpu")
    }
    # XLA's convolution only where flax's layers run: not in the CPU lowering.
    assert "convolution" not in hlo["cpu"]
    assert "convolution" in hlo["cuda"] and "convolution" in hlo["tpu"]


def test_an_unknown_choice_is_one_clear_error():
    from aejax.errors import AejaxError

    with pytest.raises(AejaxError, match="choose one of auto, plain, cpu"):
        with backend.use("fast"):
            pass


@pytest.mark.parametrize("arch, head", [("dense", False), ("conv", False), ("conv", True)])
def test_the_training_step_and_the_scorer_lower_for_cuda_and_tpu(arch, head):
    """jax.export lowers for platforms this machine lacks: a platform-specific failure (a
    CPU-only op on the GPU path, say) shows up here, without a GPU. ``head``: with the
    self-supervised head, its loss and its term."""
    state = core.init_state(arch, jax.random.key(0), transform_head=head)
    batch = jnp.zeros((8, 28, 28, 1), jnp.uint8)
    platforms = ("cpu", "cuda", "tpu")
    step = jax.export.export(core.train_step, platforms=platforms)(state, batch)
    terms = ("bce", "kl", "code", *(("transform",) if head else ()))
    scorer = jax.export.export(
        jax.jit(lambda s, x: core.per_image(s, x, terms)), platforms=platforms
    )(state, batch)
    for exported in (step, scorer):
        assert exported.platforms == platforms
        assert "stablehlo" in exported.mlir_module()

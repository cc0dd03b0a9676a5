"""The CPU execution of an ``nnx.Sequential``: the same layers and parameters, faster kernels.

XLA:CPU runs flax's convolutions of few channels (1 <-> 30 <-> 15) at a fraction of the
machine's speed, and their gradients slower still (experiments/results/speed.md). Here
activations are kept channels-first (``[C, B, H, W]``) from the first layer this module
knows to the last, and runs of layers are computed by the kernels of
:mod:`aejax.backend.conv3x3` and :mod:`aejax.backend.pooling`:

==================================================  ==========================================
layers                                              computed as
==================================================  ==========================================
``nnx.Conv`` 3x3 'same', ``relu``, ``MaxPool(2)``   one fused op (fewer in- than out-channels),
                                                    else convolution, then pool, bias, relu
``UpSample(2)``, ``nnx.Conv`` 3x3 'same'            a sub-pixel convolution of the small input
``nnx.Conv`` 3x3 'same'                             convolution as matrix products and shifts
``MaxPool(2)``, ``UpSample(2)``, activations         the same op, channels first
``nnx.Linear``, more inputs than outputs            the product with the inputs minor
anything else                                       the layer itself, channels last
==================================================  ==========================================

Each rule checks the shapes it needs (even sizes for pooling); where none applies, the
layer runs as written, so any ``nnx.Sequential`` gives flax's result (tests/test_backend.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from aejax.backend.conv3x3 import conv3x3, conv3x3_pool_bias_relu, upsample_2x2
from aejax.backend.pooling import pool_bias_relu
from aejax.models.layers import MaxPool, UpSample

# The activation functions as they are when aejax is imported, told apart by identity: a
# converter (jax2onnx) replaces flax's and jax's attributes with its own while it traces,
# and the layers of a model built before that are these.
RELU = nnx.relu
# Layers that act on each value alone: the same channels first or last.
ELEMENTWISE = (
    RELU,
    nnx.sigmoid,
    nnx.tanh,
    nnx.gelu,
    nnx.silu,
    nnx.elu,
    nnx.leaky_relu,
    nnx.softplus,
)

# A rule: (the layers from here on, the channels-first input) -> (layers used, output), or
# None where it does not apply.
Rule = Callable[[Sequence, jax.Array], "tuple[int, jax.Array] | None"]


def is_conv3x3(layer) -> bool:
    """An ``nnx.Conv`` that :func:`conv3x3` computes: 3x3, 'same', stride 1, with bias."""
    ones = (1, (1, 1), None)
    return (
        isinstance(layer, nnx.Conv)
        and tuple(layer.kernel_size) == (3, 3)
        and layer.strides in ones
        and str(layer.padding).upper() == "SAME"
        and getattr(layer, "input_dilation", 1) in ones
        and getattr(layer, "kernel_dilation", 1) in ones
        and getattr(layer, "feature_group_count", 1) == 1
        and layer.use_bias
        and layer.mask is None
        and not getattr(layer, "transpose_kernel", False)
    )


def _is_pool2(layer, x_CxBxHxW) -> bool:
    return (
        isinstance(layer, MaxPool)
        and layer.size == 2
        and x_CxBxHxW.shape[2] % 2 == 0
        and x_CxBxHxW.shape[3] % 2 == 0
    )


def _is_up2(layer) -> bool:
    return isinstance(layer, UpSample) and layer.size == 2


def _weights(conv: nnx.Conv, x) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Input, kernel and bias in the dtype flax's Conv computes in (its promote_dtype)."""
    return conv.promote_dtype((x, conv.kernel[...], conv.bias[...]), dtype=conv.dtype)


def _conv_relu_pool(layers, x):
    if len(layers) < 3 or not (is_conv3x3(layers[0]) and layers[1] is RELU):
        return None
    if not _is_pool2(layers[2], x):  # the convolution keeps H and W
        return None
    x, kernel, bias = _weights(layers[0], x)
    cin, cout = kernel.shape[2:]
    if cin <= cout:
        y = conv3x3_pool_bias_relu(x, kernel, bias)
    else:
        y = pool_bias_relu(conv3x3(x, kernel), bias)
    return 3, y


def _upsample_conv(layers, x):
    if len(layers) < 2 or not (_is_up2(layers[0]) and is_conv3x3(layers[1])):
        return None
    x, kernel, bias = _weights(layers[1], x)
    return 2, conv3x3(x, kernel, upsampled=True) + bias[:, None, None, None]


def _conv(layers, x):
    if not is_conv3x3(layers[0]):
        return None
    x, kernel, bias = _weights(layers[0], x)
    return 1, conv3x3(x, kernel) + bias[:, None, None, None]


@jax.custom_vjp
def _linear(x_BxI, kernel_IxO, bias_O):
    """``x @ kernel + bias``, computed with the kernel's many inputs minor, ``[O, I]``: the
    forward product and the kernel's gradient, a product over the batch, ran faster on
    XLA:CPU so than with the few outputs minor (flax's ``[I, O]``: the issue-15 refactor's
    notes, experiments/results/refactor_bench.md). The barriers keep XLA's
    simplifier from folding the transposes (11,760 values for the dense encoder, a few
    microseconds) back into the products."""
    kernel_OxI = jax.lax.optimization_barrier(kernel_IxO.T)
    return jax.lax.dot_general(x_BxI, kernel_OxI, (((1,), (1,)), ((), ()))) + bias_O


def _linear_fwd(x_BxI, kernel_IxO, bias_O):
    return _linear(x_BxI, kernel_IxO, bias_O), (x_BxI, kernel_IxO)


def _linear_bwd(residuals, g_BxO):
    x_BxI, kernel_IxO = residuals
    dkernel_OxI = jax.lax.optimization_barrier(g_BxO.T @ x_BxI)
    return g_BxO @ kernel_IxO.T, dkernel_OxI.T, jnp.sum(g_BxO, axis=0)


_linear.defvjp(_linear_fwd, _linear_bwd)


def _wide_linear(layers, x):
    """An ``nnx.Linear`` from many inputs to few outputs, e.g. 784 pixels to a 15-d code."""
    layer = layers[0]
    if not (
        isinstance(layer, nnx.Linear)
        and layer.use_bias
        and x.ndim == 2
        and layer.in_features > layer.out_features
    ):
        return None
    x, kernel, bias = layer.promote_dtype(
        (x, layer.kernel[...], layer.bias[...]), dtype=layer.dtype
    )
    return 1, _linear(x, kernel, bias)


def _single(layers, x):
    layer = layers[0]
    if any(layer is f for f in ELEMENTWISE):
        return 1, layer(x)
    if _is_pool2(layer, x):
        return 1, jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"
        )
    if _is_up2(layer):
        return 1, upsample_2x2(x)
    return None


RULES: tuple[Rule, ...] = (_conv_relu_pool, _upsample_conv, _conv, _single)
FLAT_RULES: tuple[Rule, ...] = (_wide_linear,)  # on [B, features]


def to_channels_first(x_BxHxWxC: jax.Array) -> jax.Array:
    return x_BxHxWxC.transpose(3, 0, 1, 2)


def to_channels_last(x_CxBxHxW: jax.Array) -> jax.Array:
    return x_CxBxHxW.transpose(1, 2, 3, 0)


def forward(layers: Sequence, x: jax.Array) -> jax.Array:
    """What ``nnx.Sequential(*layers)(x)`` computes, by the rules above where they apply."""
    layers, first = list(layers), False  # first: x is held channels-first
    while layers:
        step = _fast_step(layers, x, first)
        if step is None:  # the layer as written, on channels-last input
            step = 1, layers[0](to_channels_last(x) if first else x), False
        used, x, first = step
        layers = layers[used:]
    return to_channels_last(x) if first else x


def _fast_step(layers: list, x: jax.Array, first: bool):
    """``(layers used, output, whether it is channels-first)`` by the first rule that
    applies to the next layers, or None."""
    if x.ndim == 4 or first:  # images: these rules work channels-first
        x_cf = x if first else to_channels_first(x)
        for rule in RULES:
            if (step := rule(layers, x_cf)) is not None:
                return (*step, True)
    else:
        for rule in FLAT_RULES:
            if (step := rule(layers, x)) is not None:
                return (*step, False)
    return None

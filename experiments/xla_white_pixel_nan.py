"""Minimal reproduction of the XLA:CPU behaviour behind NaN entropy scores (jax/jaxlib 0.10.2).

The binary entropy of a pixel ``y log y + (1 - y) log(1 - y)`` is 0 for a white uint8 pixel,
where ``1 - u / 255`` is exactly 0 in IEEE arithmetic. XLA:CPU rewrites ``u / 255`` as
``u * (1/255)`` and LLVM contracts ``1 - u * c`` into one fused multiply-add, which rounds
once: ``1 - 255 * f32(1/255) = -5.9e-8``, and the log of that is NaN (``xlogy(y, y)`` only
guards ``y == 0``). Whether the contraction happens depends on how XLA fuses the expression
with its neighbours, so the same function gave NaN under XLA's default flags and none under
aejax's (issue 14): a flag is no fix.

aejax no longer relies on the cancellation: :func:`aejax.losses.entropy_per_example` looks the
entropy of each of the 256 levels up in a table computed in float64 (and clips float input
to [0, 1]); tests/test_api.py checks every score against NumPy under XLA's default flags.
Run this on a new jaxlib to see whether XLA still does it (``nan`` below): aejax's
formulation is correct either way.

    python experiments/xla_white_pixel_nan.py
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

white = np.full((4, 8), 255, np.uint8)


@jax.jit
def one_minus_x(u):
    return 1 - u.astype(jnp.float32) / 255


@jax.jit
def entropy_term(u):
    y = 1 - u.astype(jnp.float32) / 255
    return xlogy(y, y)


if __name__ == "__main__":
    exact = np.float32(1) - np.float32(255) / np.float32(255)
    print(f"jax {jax.__version__} on {jax.default_backend()}")
    print(f"1 - 255/255: NumPy {exact}, XLA {np.asarray(one_minus_x(white))[0, 0]}")
    print(f"xlogy(y, y) at y = 1 - 255/255: NumPy 0.0, XLA {np.asarray(entropy_term(white))[0, 0]}")

r"""Two-sided typicality of each raw score ``s`` (``typ-<score>``): how far ``log s`` lies from
the held-out in-distribution images' ``log`` scores, in either direction, in robust standard
deviations: :math:`z = (\log s - \mathrm{median}) / (1.4826\ \mathrm{MAD})` (``z-<score>``,
signed, a part of combined scores) and ``typ-<score>`` :math:`= |z|`. It flags inputs
reconstructed *too* well (a blank image) as much as those reconstructed badly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from aejax.ood.registry import Score, register

RAW = (
    "bce", "mse", "kl", "entropy", "elbo", "disagreement", "transform", "latent", "knn",
    "feat-maha", "feat-knn",
)  # fmt: skip
_EPS = 1e-10  # keeps log s finite for a perfect reconstruction (s = 0)


def robust_location_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 MAD of ``log values`` (float64), the scale at least 1e-6."""
    logs = np.log(np.maximum(np.asarray(values, np.float64), 0) + _EPS)
    loc = float(np.median(logs))
    scale = 1.4826 * float(np.median(np.abs(logs - loc)))
    return loc, max(scale, 1e-6)


def _signed(raw: str) -> Score:
    def fit(train: dict, held_out: dict) -> dict:
        median, scale = robust_location_scale(held_out[raw])
        if np.ptp(held_out[raw]) == 0:
            # No spread at all (one model's disagreement: 0 for every image): no information,
            # so z is 0 for every input. A finite scale would turn the last bit of another
            # runtime's log (onnxruntime's) into a typicality of 2.
            scale = np.inf
        return {"log_median": np.float64(median), "log_scale": np.float64(scale)}

    def compute(fitted: dict, x: dict) -> jax.Array:
        log_s = jnp.log(jnp.maximum(x[raw], 0) + _EPS)
        # Times the reciprocal, not divided by the scale: with the statistics as constants (the
        # exported detector) XLA would rewrite a division into that product and round otherwise.
        inverse_scale = 1 / fitted["log_scale"]
        return (log_s - fitted["log_median"]) * inverse_scale

    return Score(f"z-{raw}", (raw,), compute, fit, reported=False)


for _raw in RAW:
    register(_signed(_raw))
    register(Score(f"typ-{_raw}", (f"z-{_raw}",), lambda fitted, x, z=f"z-{_raw}": jnp.abs(x[z])))

"""The importable API computes what it should in a plain program, whatever XLA is told.

Each case runs the public functions in a fresh Python process with no ``XLA_FLAGS`` (as a
user's script would), scores real MNIST and Fashion-MNIST images (white pixels included:
they are what once gave NaN entropies, experiments/xla_white_pixel_nan.py), and compares
every score with a NumPy float64 reference computed here from the same parameters.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aejax import ood
from aejax.ood import knn, typicality

pytestmark = pytest.mark.slow  # subprocesses that train

CHILD = r"""
import sys
import numpy as np

if sys.argv[2] == "jax-first":  # JAX computes before aejax is imported: XLA's own defaults
    import jax.numpy as jnp
    jnp.zeros(3).block_until_ready()

import jax
from aejax import core, data, ood
from aejax.ood import typicality

train, _ = data.load("mnist", "train[:2048]")
state = core.init_state("dense", jax.random.key(0))
for i in range(4):
    state, _ = core.train_step(state, train[i * 256:(i + 1) * 256])
stats = ood.fit(core.per_image(state, train[:1024]),
                   core.per_image(state, train[1024:]), {"dataset": "mnist"})
mnist, _ = data.load("mnist", "test[:500]")
fashion, _ = data.load("fashion_mnist", "test[:500]")
images = np.concatenate([mnist, fashion])
got = stats.all_scores(core.per_image(state, images))
p = state.params
np.savez(sys.argv[1], images=images,
         enc_w=p["encoder"]["layers"][1]["kernel"][...],
         enc_b=p["encoder"]["layers"][1]["bias"][...],
         dec_w=p["decoder"]["layers"][0]["kernel"][...],
         dec_b=p["decoder"]["layers"][0]["bias"][...],
         latent_mean=stats.fitted["latent"]["mean"],
         latent_whitening=stats.fitted["latent"]["whitening"],
         knn_bank=stats.fitted["knn"]["bank"],
         feat_mean=stats.fitted["feat-maha"]["mean"],
         feat_whitening=stats.fitted["feat-maha"]["whitening"],
         feat_bank=stats.fitted["feat-knn"]["bank"],
         feat_centre=stats.fitted["feat-knn"]["centre"],
         feat_inverse_scale=stats.fitted["feat-knn"]["inverse_scale"],
         joint_mean=stats.fitted["joint"]["mean"],
         joint_whitening=stats.fitted["joint"]["whitening"],
         typicality=np.array([[stats.fitted[f"z-{k}"][v] for v in ("log_median", "log_scale")]
                              for k in typicality.RAW]),
         **{f"score_{k}": v for k, v in got.items()})
"""


def quadratic(centred_NxD: np.ndarray, whitening_DxD: np.ndarray) -> np.ndarray:
    """The squared Mahalanobis distances as the textbook writes them, c^T P c, with the
    precision P = W W^T in float64 (aejax sums squares of c W in float32)."""
    precision = whitening_DxD.astype(np.float64) @ whitening_DxD.T.astype(np.float64)
    return np.sum((centred_NxD @ precision) * centred_NxD, axis=1)


def numpy_scores(f) -> dict[str, np.ndarray]:
    """Every score of aejax.ood.names() for the dense net, in float64 NumPy."""
    x = f["images"].reshape(len(f["images"]), -1).astype(np.float64) / 255
    code = np.maximum(x @ f["enc_w"].astype(np.float64) + f["enc_b"], 0)
    z = code @ f["dec_w"].astype(np.float64) + f["dec_b"]
    bce = np.mean(np.maximum(z, 0) - z * x + np.log1p(np.exp(-np.abs(z))), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(x > 0, x * np.log(x), 0) + np.where(x < 1, (1 - x) * np.log(1 - x), 0))
    entropy = h.mean(axis=1)
    centred = code - f["latent_mean"]
    raw = {
        "bce": bce,
        "mse": np.mean((1 / (1 + np.exp(-z)) - x) ** 2, axis=1),
        "kl": bce - entropy,
        "entropy": entropy,
        "elbo": bce,
        "disagreement": np.zeros_like(bce),  # one model
        "transform": np.zeros_like(bce),  # no self-supervised head
        "latent": quadratic(centred, f["latent_whitening"]),
    }
    raw["knn"] = kth_distance(code, f["knn_bank"])
    # The dense net's encoder is one layer: its features are its code.
    centred = code - f["feat_mean"]
    raw["feat-maha"] = quadratic(centred, f["feat_whitening"])
    standardised = (code - f["feat_centre"]) * f["feat_inverse_scale"]
    raw["feat-knn"] = kth_distance(standardised, f["feat_bank"])
    out, signed = dict(raw), {}
    for (loc, scale), name in zip(f["typicality"], typicality.RAW, strict=True):
        signed[name] = (np.log(np.maximum(raw[name], 0) + 1e-10) - loc) / scale
        out[f"typ-{name}"] = np.abs(signed[name])
    parts = np.array([out[p] for p in ("typ-kl", "typ-bce", "typ-latent", "typ-entropy")])
    out["typ-max"], out["typ-rss"] = parts.max(axis=0), np.sqrt(np.sum(parts**2, axis=0))
    out["typ-rss-knn"] = np.sqrt(np.sum(parts**2, axis=0) + np.maximum(signed["knn"], 0) ** 2)
    every_z = np.stack([signed[name] for name in typicality.RAW], axis=1) - f["joint_mean"]
    out["joint"] = quadratic(every_z, f["joint_whitening"])
    return out


def kth_distance(values_NxD, bank_MxD) -> np.ndarray:
    unit = values_NxD / np.maximum(np.linalg.norm(values_NxD, axis=1, keepdims=True), 1e-12)
    distances = np.sqrt(np.maximum(2 - 2 * unit @ bank_MxD.T.astype(np.float64), 0))
    return np.sort(distances, axis=1)[:, knn.KNN_K - 1]


@pytest.mark.parametrize("order", ["aejax-first", "jax-first"])
def test_every_score_matches_numpy_in_a_clean_process(tmp_path, order):
    out = tmp_path / "scores.npz"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run(
        [sys.executable, "-c", CHILD, str(out), order],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    with np.load(out) as f:
        assert (f["images"] == 255).any(axis=(1, 2, 3)).mean() > 0.5  # white pixels
        expected = numpy_scores(f)
        assert set(expected) == set(ood.names())
        for name in ood.names():
            got = f[f"score_{name}"]
            assert np.isfinite(got).all(), f"{name}: {np.sum(~np.isfinite(got))} not finite"
            np.testing.assert_allclose(got, expected[name], rtol=2e-4, atol=2e-4, err_msg=name)


API_RUN = r"""
import sys
import numpy as np
from aejax import Detector, RunConfig, train_and_evaluate
from aejax.eval import run_detector

workdir = sys.argv[1]
train_and_evaluate(RunConfig(arch="dense", epochs=1), workdir)
detector, _ = run_detector(workdir)
np.save(sys.argv[3], detector.detect(np.load(sys.argv[2]))["score"])
"""


def test_the_api_in_a_plain_program_gives_the_commands_numbers(tmp_path):
    """A user's script (no XLA_FLAGS, nothing set) trains and scores with the bits of
    ``python -m aejax.train`` and ``python -m aejax.score``, which set XLA:CPU's speed flags
    (aejax gives its programs the same options when it compiles them: aejax.xla.SPEED)."""
    import csv

    from aejax import data

    images, _ = data.load("mnist", "test[:64]")
    np.save(tmp_path / "x.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}

    def run(*argv):
        subprocess.run([sys.executable, *argv], env=env, check=True, capture_output=True)

    run("-m", "aejax.train", "--arch", "dense", "--epochs", "1", "--workdir", str(tmp_path / "cli"))
    run("-m", "aejax.score", "--workdir", str(tmp_path / "cli"), str(tmp_path / "x.npy"),
        "--out", str(tmp_path / "cli.csv"))  # fmt: skip
    run("-c", API_RUN, str(tmp_path / "api"), str(tmp_path / "x.npy"), str(tmp_path / "api.npy"))

    def losses(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if "loss" in k} for line in lines]

    assert losses("cli") == losses("api")
    with open(tmp_path / "cli.csv", newline="") as f:
        cli_scores = np.array([float(row["score"]) for row in csv.DictReader(f)], np.float32)
    np.testing.assert_array_equal(np.load(tmp_path / "api.npy"), cli_scores)


def test_every_public_parameter_is_described():
    # Every parameter of every name the public modules' __all__ export (a class's
    # constructor and its public methods, a dataclass's fields) is named in its docstring
    # (or, for a class's fields and constructor, the class's): the API reference describes
    # each one.
    import inspect

    undescribed, counted = [], 0
    exported = [(m, name) for m in public_modules() for name in m.__all__]
    for module, name in exported:
        obj = getattr(module, name)
        if not callable(obj):
            continue  # a constant (ood.DEFAULT, core.TERMS)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            continue  # the exception's own arguments: a message
        targets = [(name, obj, obj.__doc__)]
        if inspect.isclass(obj):
            targets = [(name, obj.__init__, obj.__doc__)]
            for attr, member in vars(obj).items():
                if callable(member) and not attr.startswith("_") and attr != "replace":
                    targets.append((f"{name}.{attr}", member, member.__doc__))
        for label, fn, doc in targets:
            for parameter in inspect.signature(fn).parameters.values():
                if parameter.name in ("self", "cls"):
                    continue
                counted += 1
                if parameter.name not in (doc or ""):
                    undescribed.append(f"{label}({parameter.name})")
    assert counted > 250 and not undescribed, undescribed


# What users may rely on: these modules' __all__ (docs/api.md says so, and documents them).
PUBLIC = ("aejax", "aejax.core", "aejax.ood", "aejax.thresholds", "aejax.models", "aejax.data")


def public_modules() -> list:
    import importlib

    return [importlib.import_module(name) for name in PUBLIC]


def test_the_api_reference_is_the_public_names():
    # docs/api.md has one section per public module: its summary table lists exactly the
    # module's __all__, and only the public modules are documented (no internal helper).
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    documented = re.findall(r"^\.\. automodule:: (\S+)", page, re.M)
    assert documented == list(PUBLIC)
    for module in public_modules():
        block = re.search(
            rf"\.\. currentmodule:: {re.escape(module.__name__)}\n\n\.\. autosummary::\n"
            r"   :nosignatures:\n\n((?:   \S+\n)+)",
            page,
        )
        assert block, module.__name__
        listed = [line.strip().rsplit(".", 1)[-1] for line in block.group(1).splitlines()]
        assert listed == list(module.__all__), module.__name__
        # autodoc's :members: passes over jitted functions (aejax.xla.Program): each has
        # its own autofunction line in the module's section.
        from aejax import xla

        section = page.split(f".. automodule:: {module.__name__}\n", 1)[1].split("```", 1)[0]
        for name in module.__all__:
            if isinstance(getattr(module, name), xla.Program):
                assert f".. autofunction:: {name}\n" in section, (module.__name__, name)

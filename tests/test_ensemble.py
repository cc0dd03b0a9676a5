"""Ensembles trained in one program (``--ensemble K``): members are single models."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import core, run_state
from aejax.config import RunConfig, resolve
from aejax.detector import Detector
from aejax.train import __main__ as train_cli


def images(n=600, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 2, (n, 28, 28, 1)) * 255, jnp.uint8)


def test_an_ensemble_of_identical_seeds_equals_one_member():
    k, x = 3, images()
    same = jax.vmap(lambda _: jax.random.key(0))(jnp.arange(k))
    ensemble = core.init_ensemble("dense", same)
    single = core.init_state("dense", jax.random.key(0))
    ensemble, ensemble_metrics = core.train_epoch(ensemble, x, jax.random.key(1), batch_size=128)
    single, single_metrics = core.train_epoch(single, x, jax.random.key(1), batch_size=128)
    # Equal up to float summation order: vmapped matmuls add in another order than one.
    assert float(ensemble_metrics["loss"]) == pytest.approx(float(single_metrics["loss"]), rel=1e-6)
    for i in range(k):
        for a, b in zip(jax.tree.leaves(core.member(ensemble, i).params),
                        jax.tree.leaves(single.params), strict=True):  # fmt: skip
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    terms, single_terms = core.per_image(ensemble, x[:50]), core.per_image(single, x[:50])
    np.testing.assert_allclose(terms["bce"], single_terms["bce"], rtol=1e-5)
    assert terms["code"].shape == (50, k * single_terms["code"].shape[1])  # side by side
    # Identical members agree everywhere; one model has nothing to disagree with.
    np.testing.assert_allclose(terms["disagreement"], 0, atol=1e-9)
    np.testing.assert_array_equal(single_terms["disagreement"], 0)


def test_disagreement_is_the_members_pixel_variance_and_each_member_is_itself():
    k, x = 3, images(40, seed=1)
    ensemble = core.init_ensemble("dense", jax.random.split(jax.random.key(2), k))
    ensemble, _ = core.train_epoch(ensemble, images(), jax.random.key(1), batch_size=128)
    each = core.per_image(ensemble, x, ("bce", "code"), each_member=True)
    recon_KxN = []
    for i in range(k):
        one = core.member(ensemble, i)
        alone = core.per_image(one, x, ("bce", "code"))
        np.testing.assert_allclose(each["bce"][:, i], alone["bce"], rtol=1e-5)
        np.testing.assert_allclose(each["code"][:, i], alone["code"], rtol=1e-5, atol=1e-6)
        recon_KxN.append(np.asarray(core.reconstruct(one, x), np.float64).reshape(len(x), -1))
    expected = np.var(np.stack(recon_KxN), axis=0).mean(axis=1)
    got = core.per_image(ensemble, x, ("disagreement",))["disagreement"]
    assert expected.min() > 0  # members from different seeds disagree
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_members_differ_by_their_seeds_and_start_as_single_runs():
    config = resolve(RunConfig(ensemble=3, seed=5))
    ensemble = run_state.fresh_state(config)
    for i in range(3):
        single = run_state.fresh_state(resolve(RunConfig(seed=5 + i)))
        for a, b in zip(jax.tree.leaves(core.member(ensemble, i).params),
                        jax.tree.leaves(single.params), strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # trains and evaluates through the CLIs on MNIST
def test_ensemble_cli_reports_members_and_scores(tmp_path, capsys):
    small = ["--arch", "dense", "--holdout", "50000", "--epochs", "1"]
    assert train_cli.main([*small, "--ensemble", "3", "--workdir", str(tmp_path / "e")]) == 0
    assert "± " in capsys.readouterr().out
    assert train_cli.main([*small, "--workdir", str(tmp_path / "s")]) == 0
    ensemble = json.loads((tmp_path / "e" / "metrics.jsonl").read_text().splitlines()[-1])
    single = json.loads((tmp_path / "s" / "metrics.jsonl").read_text().splitlines()[-1])
    # Member 0 is the single run with the same seed (same initialisation, same batches).
    assert ensemble["val_loss_members"][0] == pytest.approx(single["val_loss"], rel=1e-5)
    assert len(set(ensemble["val_loss_members"])) == 3
    assert ensemble["val_loss"] == pytest.approx(np.mean(ensemble["val_loss_members"]))
    # Restored from its checkpoint, it scores and maps new images like any run.
    from aejax import eval as evaluation

    evaluation.fit_detector(tmp_path / "e")
    detector = Detector.load(tmp_path / "e")
    x = np.asarray(images(20, seed=3))
    out = detector.detect(x)
    assert out["score"].shape == (20,) and np.isfinite(out["score"]).all()
    assert detector.maps(x)["anomaly"].shape == (20, 28, 28)

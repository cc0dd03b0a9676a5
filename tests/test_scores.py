"""OOD scores on small cases whose answers are known, and the fitted statistics' file."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aejax import backend, core, losses, metrics, ood
from aejax.ood import joint, knn, latent
from tests.helpers import experiments_module


def test_kl_of_a_perfect_reconstruction_is_zero():
    x = jnp.asarray(np.random.default_rng(0).uniform(0.01, 0.99, (4, 28, 28, 1)), jnp.float32)
    x = x.at[:, :3].set(0.0).at[:, -3:].set(1.0)  # exact 0s and 1s too (0 log 0 = 0)
    logits = jnp.log(x) - jnp.log1p(-x)  # sigmoid(logits) == x
    logits = jnp.where(x == 0, -40.0, jnp.where(x == 1, 40.0, logits))
    kl = losses.bce_per_example(logits, x) - losses.entropy_per_example(x)
    np.testing.assert_allclose(kl, 0.0, atol=2e-6)
    # ... and the entropy term is what BCE is mostly made of for grey images.
    assert float(losses.entropy_per_example(x).min()) > 0.3


def exact_kl_per_pixel(logits, images_uint8):
    """KL(x || sigmoid(z)) per pixel in float64, without cancellation (log1p and expm1 of
    t = z - logit x), from the float32 logits as they are."""
    z, x = logits.astype(np.float64), images_uint8 / 255.0
    with np.errstate(all="ignore"):
        t = z - (np.log(x) - np.log1p(-x))
        grey = x * np.log1p((1 - x) * np.expm1(-t)) + (1 - x) * np.log1p(x * np.expm1(t))
    black = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))  # softplus(z)
    white = np.maximum(-z, 0) + np.log1p(np.exp(-np.abs(z)))  # softplus(-z)
    return np.where(images_uint8 == 0, black, np.where(images_uint8 == 255, white, grey))


def test_kl_is_accurate_however_well_a_pixel_is_reconstructed():
    # Every level, predicted from far off to within 1e-5 of exactly (t = z - logit x), and
    # black and white pixels predicted from -90 to 90: each pixel's KL within a few 1e-6 of
    # the exact one, an image's mean within 3e-7.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 784)).astype(np.uint8)
    x = images / 255.0
    with np.errstate(divide="ignore"):
        logit = np.log(x) - np.log1p(-x)
    centre = np.where(images == 0, -9.0, np.where(images == 255, 9.0, logit))
    spread = rng.choice([30, 3, 1, 0.3, 1e-2, 1e-5], images.shape)
    logits = (centre + rng.normal(0, 1, images.shape) * spread).astype(np.float32)
    got = np.asarray(jax.jit(losses.kl_per_pixel)(logits, images), np.float64)
    exact = exact_kl_per_pixel(logits, images)
    assert np.isfinite(got).all() and (got >= 0).all()
    # atol: below 1e-12, float32's exp flushes to 0 and float64's own t is the coarser one
    np.testing.assert_allclose(got, exact, rtol=3e-6, atol=1e-12)
    per_image = np.asarray(losses.kl_per_example(logits, images))
    np.testing.assert_allclose(per_image, exact.mean(axis=1), rtol=3e-7)
    # Images reconstructed well (every logit within ~0.05 of the pixel's, black ones at -9):
    # their kl is small beside their bce, and the float32 difference of the two was up to 2e-4
    # off here (BCE's rounding, kept whole by the difference).
    images = np.where(rng.uniform(size=images.shape) < 0.7, 0, images).astype(np.uint8)
    near = np.where(images == 0, -9.0, np.where(images == 255, 9.0, logit))
    logits = (near + rng.normal(0, 0.05, images.shape)).astype(np.float32)
    exact = exact_kl_per_pixel(logits, images).mean(axis=1)
    per_image = np.asarray(losses.kl_per_example(logits, images))
    np.testing.assert_allclose(per_image, exact, rtol=3e-7)
    as_difference = np.asarray(losses.kl_per_example(logits, images.astype(np.float32) / 255))
    assert np.abs(as_difference / exact - 1).max() > 1e-5


def test_entropy_of_binary_images_is_zero():
    x = jnp.asarray(np.random.default_rng(1).integers(0, 2, (3, 28, 28, 1)), jnp.float32)
    np.testing.assert_array_equal(losses.entropy_per_example(x), 0.0)


def test_image_terms_are_consistent():
    state = core.init_state("conv", jax.random.key(0))
    images = jnp.asarray(np.random.default_rng(2).integers(0, 256, (10, 28, 28, 1), np.uint8))
    terms = core.per_image(state, images, batch_size=4)
    np.testing.assert_allclose(terms["bce"], core.score(state, images), rtol=1e-5)
    np.testing.assert_allclose(terms["kl"] + terms["entropy"], terms["bce"], rtol=1e-6)
    np.testing.assert_allclose(terms["mse"], core.score(state, images, "mse"), rtol=1e-5)
    assert terms["code"].shape == (10, 7 * 7 * 15)
    assert float(jnp.min(terms["kl"])) > -1e-6  # KL >= 0
    np.testing.assert_array_equal(terms["elbo"], terms["bce"])  # no prior on the code


def test_elbo_adds_a_vae_prior_term_to_bce():
    state = core.init_state("vae", jax.random.key(0))
    images = jnp.asarray(np.random.default_rng(2).integers(0, 256, (10, 28, 28, 1), np.uint8))
    terms = core.per_image(state, images, batch_size=4)
    prior = state.model.prior_term(core.to_float(images))
    assert float(jnp.min(prior)) > 0  # KL(q || N(0, I)) of an untrained encoder
    np.testing.assert_allclose(terms["elbo"], terms["bce"] + prior, rtol=1e-5)


def synthetic_terms(rng, n, bce_scale=1.0):
    terms = {
        "bce": rng.lognormal(np.log(0.1 * bce_scale), 0.2, n),
        "mse": rng.lognormal(np.log(0.01), 0.2, n),
        "kl": rng.lognormal(np.log(0.05), 0.2, n),
        "entropy": rng.lognormal(np.log(0.05), 0.2, n),
        "code": rng.normal(size=(n, 4)).astype(np.float32),
        "features": rng.gamma(2.0, size=(n, 6)).astype(np.float32),
        "disagreement": np.zeros(n),  # one model
        "transform": np.zeros(n),  # no self-supervised head
    }
    return {**terms, "elbo": terms["bce"] + rng.lognormal(np.log(0.01), 0.2, n)}


@pytest.fixture
def stats():
    rng = np.random.default_rng(3)
    return ood.fit(synthetic_terms(rng, 5000), synthetic_terms(rng, 1000), {"dataset": "x"})


def test_two_sided_typicality_flags_both_tails(stats):
    rng = np.random.default_rng(4)
    normal = stats.all_scores(synthetic_terms(rng, 2000))
    too_well = stats.all_scores(synthetic_terms(rng, 1000, bce_scale=0.05))  # "blank images"
    too_badly = stats.all_scores(synthetic_terms(rng, 1000, bce_scale=20))
    both = {k: np.concatenate([too_well[k], too_badly[k]]) for k in too_well}
    # One-sided BCE ranks the too-well half below normal: chance level overall.
    assert metrics.ood_metrics(normal["bce"], both["bce"])["auroc"] == pytest.approx(0.5, abs=0.02)
    assert metrics.ood_metrics(normal["typ-bce"], both["typ-bce"])["auroc"] > 0.999
    # Typicality is ~|z|: median ~0.67 for in-distribution data.
    assert np.median(normal["typ-bce"]) == pytest.approx(0.6745, abs=0.1)


def test_latent_mahalanobis_flags_far_codes(stats):
    rng = np.random.default_rng(5)
    near, far = synthetic_terms(rng, 500), synthetic_terms(rng, 500)
    far["code"] = far["code"] * 6
    d_near, d_far = stats.all_scores(near)["latent"], stats.all_scores(far)["latent"]
    assert np.mean(d_near) == pytest.approx(4, rel=0.15)  # E[chi2 with 4 dof]
    assert metrics.ood_metrics(d_near, d_far)["auroc"] > 0.99


def test_combined_scores_combine_their_parts(stats):
    s = stats.all_scores(synthetic_terms(np.random.default_rng(6), 50))
    parts = np.array([s["typ-kl"], s["typ-bce"], s["typ-latent"], s["typ-entropy"]])
    np.testing.assert_allclose(s["typ-max"], parts.max(axis=0))
    np.testing.assert_allclose(
        s["typ-rss"], np.sqrt((parts**2).sum(axis=0)), rtol=1e-6
    )  # float32 sums
    # kNN joins one-sided: only a code farther from the training codes than usual counts.
    median, scale = (float(stats.fitted["z-knn"][k]) for k in ("log_median", "log_scale"))
    far = np.maximum((np.log(s["knn"] + 1e-10) - median) / scale, 0)
    np.testing.assert_allclose(s["typ-rss-knn"], np.hypot(s["typ-rss"], far), rtol=1e-5)
    assert (far == 0).any() and (far > 0).any()
    assert set(s) == set(ood.names()) and ood.DEFAULT in ood.names()


def test_stats_round_trip_through_the_saved_file(stats, tmp_path):
    path = ood.stats_path(tmp_path, 15)
    ood.save(stats, path)
    loaded = ood.load(path)
    np.testing.assert_array_equal(loaded.fitted["latent"]["mean"], stats.fitted["latent"]["mean"])
    np.testing.assert_array_equal(
        loaded.fitted["latent"]["whitening"], stats.fitted["latent"]["whitening"]
    )
    assert set(loaded.fitted) == set(stats.fitted) and loaded.meta == stats.meta
    for score, arrays in stats.fitted.items():  # the typicality statistics among them
        for name, value in arrays.items():
            np.testing.assert_array_equal(loaded.fitted[score][name], value)
    terms = synthetic_terms(np.random.default_rng(7), 20)
    for name, values in stats.all_scores(terms).items():
        np.testing.assert_array_equal(loaded.all_scores(terms)[name], values)
    assert ood.load(tmp_path / "missing.npz") is None


def test_knn_of_a_training_code_is_its_distance_to_the_kth_other_code(stats):
    bank = stats.fitted["knn"]["bank"]  # normalised training codes
    assert bank.shape == (knn.KNN_BANK, 4)
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1, rtol=1e-5)
    k = 5
    for i in (0, 17, 4321):
        others = np.delete(bank, i, axis=0)
        distances = np.sort(np.linalg.norm(others - bank[i], axis=1))
        # The code itself is its own nearest neighbour (distance 0): the k-th *other* code
        # is its (k + 1)-th.
        got = knn.kth_distance(jnp.asarray(bank[i : i + 1]), jnp.asarray(bank), k + 1)
        assert float(got[0]) == pytest.approx(distances[k - 1], abs=2e-3)


def test_knn_score_is_brute_force_nearest_neighbours(stats):
    rng = np.random.default_rng(8)
    terms = synthetic_terms(rng, 700)  # not a multiple of the 512-code chunks
    terms["code"][:5] *= 50  # the norm is dropped: only directions count
    got = stats.all_scores(terms)["knn"]
    codes = terms["code"] / np.linalg.norm(terms["code"], axis=1, keepdims=True)
    distances = np.linalg.norm(codes[:, None] - stats.fitted["knn"]["bank"][None], axis=2)
    expected = np.sort(distances, axis=1)[:, knn.KNN_K - 1]
    np.testing.assert_allclose(got, expected, atol=2e-3)


@pytest.mark.parametrize("bank_rows", [5000, 4321, 300, "ties"])
def test_the_kth_nearest_is_exact_whatever_the_bank(bank_rows):
    # The search prunes the bank by levels of groups (knn.GROUPS): exact for banks of any size
    # (a last group part empty, or fewer groups than k) and with ties (codes banked twice).
    rng = np.random.default_rng(12)
    codes = rng.normal(size=(400, 15)).astype(np.float32)
    bank = np.asarray(knn.normalised(jnp.asarray(rng.normal(size=(5000, 15)), jnp.float32)))
    bank = np.tile(bank[:7], (300, 1)) if bank_rows == "ties" else bank[:bank_rows]
    got = knn.kth_distance(jnp.asarray(codes), jnp.asarray(bank), knn.KNN_K)
    unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    distances = np.linalg.norm(unit[:, None] - bank[None], axis=2)
    np.testing.assert_allclose(got, np.sort(distances, axis=1)[:, knn.KNN_K - 1], atol=1e-6)


def test_feature_knn_of_a_training_image_is_its_distance_to_the_kth_other(stats):
    train = synthetic_terms(np.random.default_rng(3), 5000)  # the fixture's: all in the bank
    fitted = stats.fitted["feat-knn"]
    unit = (train["features"] - fitted["centre"]) * fitted["inverse_scale"]
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    np.testing.assert_allclose(fitted["bank"], unit, atol=1e-6)
    for i in (0, 17, 4321):
        distances = np.sort(np.linalg.norm(np.delete(unit, i, axis=0) - unit[i], axis=1))
        got = stats.all_scores({k: v[i : i + 1] for k, v in train.items()})["feat-knn"]
        # The image is its own nearest (distance 0): its KNN_K-th is the (KNN_K - 1)-th other.
        assert float(got[0]) == pytest.approx(distances[knn.KNN_K - 2], abs=2e-3)


def test_feature_mahalanobis_is_ledoit_wolfs(stats):
    from sklearn.covariance import LedoitWolf

    train = synthetic_terms(np.random.default_rng(3), 5000)
    new = synthetic_terms(np.random.default_rng(11), 300)
    gaussian = LedoitWolf().fit(train["features"].astype(np.float64))
    expected = gaussian.mahalanobis(new["features"].astype(np.float64))  # squared distances
    np.testing.assert_allclose(stats.all_scores(new)["feat-maha"], expected, rtol=1e-4)


@pytest.mark.parametrize("backend_choice", ["plain", "cpu"])
def test_features_are_every_encoder_layers_pooled_activations(backend_choice):
    state = core.init_state("conv", jax.random.key(0))
    images = jnp.asarray(np.random.default_rng(9).integers(0, 256, (6, 28, 28, 1), np.uint8))
    x = core.to_float(images)
    layers = state.model.encoder.layers  # conv, relu, pool, conv, relu, pool
    with backend.use("plain"):  # flax's layers, one by one
        first = nnx.Sequential(*layers[:3])(x)  # [6, 14, 14, 30]
        code = nnx.Sequential(*layers[3:])(first)  # [6, 7, 7, 15]
    with backend.use(backend_choice):
        got = core.image_terms(state.model, images, ("code", "features"))  # eager: no cache
    expected = np.concatenate([first.mean(axis=(1, 2)), code.mean(axis=(1, 2))], axis=1)
    np.testing.assert_allclose(got["features"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["code"], code.reshape(6, -1), rtol=1e-5, atol=1e-6)


def test_likelihood_ratio_is_zero_for_the_same_model():
    state = core.init_state("dense", jax.random.key(0))
    images = jnp.asarray(np.random.default_rng(9).integers(0, 256, (30, 28, 28, 1), np.uint8))
    terms = core.per_image(state, images, ("bce",))
    assert np.all(
        np.asarray(experiments_module("scores_extra").likelihood_ratio(terms, terms)) == 0
    )
    other = core.per_image(core.init_state("dense", jax.random.key(1)), images, ("bce",))
    assert np.any(
        np.asarray(experiments_module("scores_extra").likelihood_ratio(terms, other)) != 0
    )


def test_mutation_replaces_the_given_fraction_by_random_pixel_values():
    x = jnp.full((64, 28, 28, 1), 0.5, jnp.float32)
    out = np.asarray(core.mutated(x, 0.2, jax.random.key(3)))
    changed = out != 0.5
    assert changed.mean() == pytest.approx(0.2, abs=0.01)  # 0.5 is no pixel value k/255
    new = out[changed] * 255
    np.testing.assert_allclose(new, np.rint(new), atol=1e-4)
    assert new.min() < 10 and new.max() > 245  # uniform over 0..255
    np.testing.assert_array_equal(out, np.asarray(core.mutated(x, 0.2, jax.random.key(3))))


def test_a_background_model_trains_on_mutated_images():
    images = jnp.asarray(np.random.default_rng(10).integers(0, 2, (32, 28, 28, 1)) * 255, jnp.uint8)
    plain = core.init_state("dense", jax.random.key(0))
    background = core.init_state("dense", jax.random.key(0), mutation_rate=0.3)
    _, plain_metrics = core.train_step(plain, images)
    _, background_metrics = core.train_step(background, images)
    # Same parameters, same batch: only the mutated inputs make the losses differ.
    assert float(plain_metrics["loss"]) != pytest.approx(float(background_metrics["loss"]))


@pytest.mark.parametrize("n, d", [(40, 120), (3, 50)])
def test_fewer_codes_than_dimensions_give_ledoit_wolfs_distances_in_low_rank(n, d):
    """A few hundred images of one's own and a conv net's code of thousands of dimensions:
    the Gaussian is fitted from the codes' Gram matrix, never as a [D, D] matrix, and gives
    scikit-learn's Ledoit-Wolf distances."""
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(9)
    codes = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + rng.normal(size=d)
    mean, precision, low_rank, shrinkage = latent.fit_gaussian(codes)
    assert precision is None and low_rank["basis"].shape == (d, n - 1)  # centred: rank n - 1
    reference = LedoitWolf().fit(codes)
    assert shrinkage == pytest.approx(reference.shrinkage_, rel=1e-9)
    new = rng.normal(size=(25, d)) * 2 + codes.mean(0)
    centred = np.concatenate([codes, new]) - reference.location_
    expected = np.einsum("nd,de,ne->n", centred, reference.precision_, centred)
    got = latent.mahalanobis_low_rank(
        jnp.asarray(np.concatenate([codes, new]), jnp.float32),
        jnp.asarray(mean, jnp.float32),
        *(jnp.asarray(low_rank[k], jnp.float32)
          for k in ("basis", "inverse_variance", "isotropic_precision")),
    )  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_a_few_dozen_training_images_still_give_every_score(tmp_path):
    """Fewer training codes than KNN_K, than KNN_BANK and than code dimensions: every score
    is finite, kNN is the distance to the farthest code, and the statistics save and load."""
    rng = np.random.default_rng(10)
    train, held_out = synthetic_terms(rng, 6), synthetic_terms(rng, 9)
    for terms in (train, held_out):
        terms["code"] = rng.normal(size=(len(terms["bce"]), 32)).astype(np.float32)
    stats = ood.fit(train, held_out, {"dataset": "x"})
    assert (
        stats.fitted["knn"]["bank"].shape == (6, 32) and "whitening" not in stats.fitted["latent"]
    )
    new = synthetic_terms(rng, 4)
    new["code"] = rng.normal(size=(4, 32)).astype(np.float32)
    got = stats.all_scores(new)
    assert all(np.isfinite(v).all() for v in got.values()) and set(got) == set(ood.names())
    unit = new["code"] / np.linalg.norm(new["code"], axis=1, keepdims=True)
    farthest = np.linalg.norm(unit[:, None] - stats.fitted["knn"]["bank"][None], axis=2).max(1)
    np.testing.assert_allclose(got["knn"], farthest, rtol=1e-5)
    path = ood.stats_path(tmp_path, 3)
    ood.save(stats, path)
    loaded = ood.load(path)
    assert "whitening" not in loaded.fitted["latent"]
    for name, values in got.items():
        np.testing.assert_array_equal(loaded.all_scores(new)[name], values)


def test_the_joint_density_of_a_gaussian_sample_gives_its_mahalanobis_distances():
    # A correlated Gaussian with a known covariance: the fitted joint score is the squared
    # Mahalanobis distance under it (Ledoit-Wolf shrinks little with 20,000 samples).
    rng = np.random.default_rng(8)
    covariance = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, -0.3], [0.0, -0.3, 2.0]])
    sample = rng.multivariate_normal([1.0, -2.0, 0.5], covariance, 20_000)
    # A constant column and a copy of the first take no part.
    values = np.column_stack([sample, np.zeros(len(sample)), 3 * sample[:, 0] + 1])
    fitted = joint.fit_joint(values)
    assert fitted["_statistics"] == 3
    assert not fitted["whitening"][3:].any() and not fitted["whitening"][:, 3:].any()
    points = rng.multivariate_normal([1.0, -2.0, 0.5], covariance, 5)
    centred = points - [1.0, -2.0, 0.5]
    known = np.einsum("nf,fg,ng->n", centred, np.linalg.inv(covariance), centred)
    got = latent.mahalanobis(
        np.column_stack([points, np.zeros(5), 3 * points[:, 0] + 1]).astype(np.float32),
        fitted["mean"].astype(np.float32),
        fitted["whitening"].astype(np.float32),
    )
    np.testing.assert_allclose(got, known, rtol=0.03, atol=0.02)


@pytest.mark.parametrize("rows", [0, 1])
def test_the_joint_fit_of_too_few_rows_scores_zero_not_nan(rows):
    # A held-out slice of one image: its cross-fitting fold fits to no rows at all (found by
    # scikit-learn's estimator checks, which fit detectors on a dozen rows).
    fitted = joint.fit_joint(np.ones((rows, 4)))
    assert fitted["_statistics"] == 0 and np.isfinite(fitted["mean"]).all()
    z = np.ones((2, 4), np.float32)
    got = latent.mahalanobis(
        z, fitted["mean"].astype(np.float32), fitted["whitening"].astype(np.float32)
    )
    np.testing.assert_array_equal(np.asarray(got), 0)


def test_the_joint_score_sees_a_combination_each_statistic_finds_typical():
    # Error that goes with entropy in the held-out images: an image with typical error and
    # typical entropy, but high error for low entropy, is typical to typ-rss, not to joint.
    rng = np.random.default_rng(9)

    def terms(n, flip=False):
        t = synthetic_terms(rng, n)
        log_bce = np.log(t["bce"] / 0.1)  # N(0, 0.2): entropy goes with it, or against it
        noise = rng.normal(0, 0.05, n)
        t["entropy"] = 0.05 * np.exp((-log_bce if flip else log_bce) + noise)
        return t

    fitted = ood.fit(terms(5000), terms(1000), {"dataset": "x"})
    normal, odd = fitted.all_scores(terms(1000)), fitted.all_scores(terms(1000, flip=True))
    # Chance for typ-rss; joint separates all but the images near the median, where going
    # with or against it makes little difference.
    assert metrics.ood_metrics(normal["typ-rss"], odd["typ-rss"])["auroc"] < 0.55
    assert metrics.ood_metrics(normal["joint"], odd["joint"])["auroc"] > 0.8


def test_held_out_scores_of_a_cross_fitted_score_come_from_the_other_folds(stats):
    # The threshold is set on them: fitted to the held-out images themselves they would be
    # smaller than a new in-distribution image's (an in-sample Mahalanobis distance).
    rng = np.random.default_rng(3)  # the fixture's held-out terms
    synthetic_terms(rng, 5000)
    in_sample = stats.all_scores(synthetic_terms(rng, 1000))["joint"]
    new = stats.all_scores(synthetic_terms(np.random.default_rng(10), 20_000))["joint"]
    cross_fitted = stats.holdout_scores["joint"]
    assert stats.meta["joint_statistics"] == 9  # of 10: disagreement is 0 for one model
    assert np.mean(cross_fitted) == pytest.approx(np.mean(new), rel=0.05)
    assert np.mean(in_sample) < np.mean(cross_fitted) and not np.allclose(in_sample, cross_fitted)


@pytest.mark.parametrize("n", [37, 104, 549, 4338, 7000])
def test_the_knn_bank_is_whole_groups_of_the_search(n):
    """A bank the search splits without padding (each level's groups whole), losing fewer
    than one group's codes: padded, it was searched at half the speed."""
    codes = np.random.default_rng(n).normal(size=(n, 15)).astype(np.float32)
    bank = knn.fit_term("code")({"code": codes}, {})["bank"]
    m = len(bank)
    assert all(m % g == 0 for g in knn.GROUPS if -(-m // g) > knn.KNN_K)
    assert min(n, knn.KNN_BANK) - m < knn.GROUPS[0]

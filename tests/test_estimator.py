"""AutoencoderDetector against the contracts its users bring: scikit-learn's estimator checks
(sklearn.utils.estimator_checks, run for real) and PyOD's base-detector assertions (adapted
from PyOD's own tests, pyod/test/test_auto_encoder.py)."""

import functools
import json
import os
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import estimator_checks_generator

from aejax import AutoencoderDetector, data

# scikit-learn's checks that do not apply to an image detector with PyOD's conventions, and
# why. Every other check of sklearn.utils.estimator_checks runs below.
NOT_APPLICABLE = {
    # scikit-learn's outlier detectors label outliers -1 and inliers +1, and their
    # decision_function is higher for inliers; PyOD's (which this follows) label 1 and 0, and
    # score higher for outliers.
    "check_outliers_train": "PyOD's labels (1 outlier, 0 inlier) and score direction",
    "check_outliers_fit_predict": "PyOD's labels (1 outlier, 0 inlier) and score direction",
    # Tabular data with negative values is scaled onto pixels (Pixels "range"), which this
    # check reads as refusing it... it expects an error where the estimator declares it
    # positive-only; this detector declares nothing and accepts them.
    "check_positive_only_tag_during_fit": "accepts negative values (scaled onto pixels)",
    # Needs SCIPY_ARRAY_API and array-API namespaces; the detector computes in JAX on
    # NumPy inputs.
    "check_array_api_input": "array API namespaces are not inputs of a JAX detector",
}
# Checks that compare one image's score computed in batches of other shapes, to 1e-7
# relative: on some CPUs (an AMD EPYC here) XLA:CPU's sums over an image's pixels round the
# last bit differently for other batch shapes (experiments/results/batch_invariance.md).
# They run at 1e-5: float32's precision, which the default score (joint, a Mahalanobis
# distance of ten statistics) magnifies (up to 1.2e-6 measured there); and, for
# predict_proba's probabilities near 0 (1 - p, p within an ulp of 1), at 1e-6 absolute: an
# ulp of float32 at 1.0 is 1.2e-7, which a relative tolerance cannot grant a 0.
AT_FLOAT32_PRECISION = {"check_methods_sample_order_invariance"}
# The checks that fit a detector (each trains an autoencoder, a few seconds): the slow tier.
FITTING = {
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_estimators_dtypes", "check_dtype_object", "check_pipeline_consistency",
    "check_estimators_nan_inf", "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_classifier_data_not_an_array", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_fit2d_1feature", "check_dict_unchanged",
    "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
    "check_fit2d_predict1d", "check_outlier_contamination", "check_fit2d_1sample",
    "check_estimators_empty_data_messages", "check_complex_data",
    "check_estimator_sparse_tag", "check_estimator_sparse_array",
    "check_estimator_sparse_matrix", "check_non_transformer_estimators_n_iter",
}  # fmt: skip


def name_of(check) -> str:
    return (check.func if isinstance(check, functools.partial) else check).__name__


def checks(fitting: bool) -> list:
    """scikit-learn's checks of a default detector, those that fit one or those that don't."""
    found = estimator_checks_generator(AutoencoderDetector("dense", epochs=2), legacy=True)
    return [
        pytest.param(est, check, id=name_of(check) + str(i))
        for i, (est, check) in enumerate(found)
        if name_of(check) not in NOT_APPLICABLE and (name_of(check) in FITTING) == fitting
    ]


def test_every_check_of_scikit_learn_is_run_or_said_not_to_apply():
    names = {name_of(c) for _, c in estimator_checks_generator(AutoencoderDetector())}
    assert set(NOT_APPLICABLE) <= names and AT_FLOAT32_PRECISION <= FITTING <= names
    unfitted = names - FITTING - set(NOT_APPLICABLE)
    assert "check_set_params" in unfitted and len(unfitted) >= 12, unfitted


@pytest.mark.parametrize("estimator, check", checks(fitting=False))
def test_scikit_learn_checks_without_fitting(estimator, check):
    check(estimator)


@pytest.mark.slow  # each check trains small detectors on its own tabular data
@pytest.mark.parametrize("estimator, check", checks(fitting=True))
def test_scikit_learn_checks_that_fit(estimator, check, monkeypatch):
    monkeypatch.setenv("AEJAX_MAX_STEPS", "20")
    if name_of(check) in AT_FLOAT32_PRECISION:
        strict = estimator_checks.assert_allclose_dense_sparse

        def close(x, y, rtol=1e-7, atol=1e-9, err_msg=""):  # the check passes its own atol
            strict(x, y, rtol=max(rtol, 1e-5), atol=max(atol, 1e-6), err_msg=err_msg)

        monkeypatch.setattr(estimator_checks, "assert_allclose_dense_sparse", close)
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    """MNIST's ones as the normal images, the other digits as anomalies."""
    images, labels = data.load("mnist", "train[:3000]")
    return images[labels == 1], images[labels != 1][:300]


@pytest.fixture(scope="module")
def fitted(digits):
    normal, _ = digits
    return AutoencoderDetector("dense", epochs=2, contamination=0.1).fit(normal)


@pytest.mark.slow
def test_pyods_base_detector_assertions(fitted, digits):
    """PyOD's test_auto_encoder.py, on images: the fitted attributes, the shapes and ranges
    of every prediction, and the errors it expects."""
    normal, others = digits
    test = np.concatenate([normal[:100], others])
    truth = np.r_[np.zeros(100), np.ones(len(others))]
    for name in ("decision_scores_", "labels_", "threshold_", "_mu", "_sigma", "history_"):
        assert getattr(fitted, name) is not None, name
    assert fitted.decision_scores_.shape == (len(normal),)
    assert isinstance(fitted.threshold_, float) and float(fitted.threshold_) == fitted.threshold_
    assert set(np.unique(fitted.labels_)) <= {0, 1}
    scores = fitted.decision_function(test)
    from sklearn.metrics import roc_auc_score

    assert scores.shape == (len(test),) and roc_auc_score(truth, scores) >= 0.8
    labels = fitted.predict(test)
    assert labels.shape == truth.shape and set(np.unique(labels)) <= {0, 1}
    for method in ("linear", "unify"):
        proba = fitted.predict_proba(test, method=method)
        assert proba.shape == (len(test), 2) and proba.min() >= 0 and proba.max() <= 1
        np.testing.assert_allclose(proba.sum(axis=1), 1)
    with pytest.raises(ValueError):
        fitted.predict_proba(test, method="something")
    labels2, confidence = fitted.predict(test, return_confidence=True)
    assert (labels2 == labels).all() and confidence.shape == truth.shape
    assert confidence.min() >= 0 and confidence.max() <= 1
    proba, confidence = fitted.predict_proba(test, method="linear", return_confidence=True)
    assert confidence.shape == truth.shape
    assert ((fitted.predict_confidence(test) >= 0) & (fitted.predict_confidence(test) <= 1)).all()


@pytest.mark.parametrize("contamination", [0.0, 0.7, -0.1, 1])
def test_contamination_outside_pyods_range_is_a_value_error(contamination):
    det = AutoencoderDetector(contamination=contamination)  # stored as given...
    assert det.get_params()["contamination"] == contamination
    with pytest.raises(ValueError, match=r"contamination must be in \(0, 0.5\]"):
        det.fit(np.zeros((10, 8, 8), np.uint8))  # ...and refused by fit, before training


def test_init_stores_and_methods_before_fit_raise_not_fitted():
    det = AutoencoderDetector(model=None, target_fpr=0.1, contamination=0.1)  # both: no error
    assert det.model is None and det.target_fpr == 0.1
    with pytest.raises(ValueError, match="at most one of"):
        det.fit(np.zeros((10, 8, 8), np.uint8))
    for method in ("predict", "decision_function", "predict_proba", "predict_confidence"):
        with pytest.raises(NotFittedError):
            getattr(AutoencoderDetector(), method)(np.zeros((2, 8, 8), np.uint8))


@pytest.mark.slow
def test_every_fit_fits_the_data_it_is_given(digits, tmp_path):
    """Twice with one workdir: the second fit trains on the second data (the first run is
    moved aside, not reused, not deleted); warm_start continues a run explicitly."""
    normal, others = digits
    workdir = tmp_path / "run"
    det = AutoencoderDetector("dense", epochs=1, workdir=workdir)
    first = det.fit(normal).decision_function(others[:50])
    with pytest.warns(UserWarning, match="held a run: moved it to"):
        det.fit(others)
    second = det.decision_function(others[:50])
    assert not np.array_equal(first, second)
    assert second.mean() < first.mean()  # the anomalies are now what it learned
    saved = np.load(workdir / "train_images.npy")
    np.testing.assert_array_equal(saved, others)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.")]
    assert len(aside) == 1 and (aside[0] / "train_images.npy").is_file()
    # set_params(seed=1): a new model, no clash with the saved run.
    with pytest.warns(UserWarning, match="held a run"):
        reseeded = det.set_params(seed=1).fit(others).decision_function(others[:50])
    assert not np.array_equal(reseeded, second)
    # warm_start continues the run saved there (nothing further to train at its epochs).
    continued = det.set_params(warm_start=True).fit(others).decision_function(others[:50])
    np.testing.assert_array_equal(continued, reseeded)
    with pytest.raises(ValueError, match="warm_start continues the run"):
        det.fit(normal)


@pytest.mark.slow
def test_fit_writes_nothing_in_the_current_directory(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    det = AutoencoderDetector("dense", epochs=1).fit(digits[0])
    assert list(tmp_path.iterdir()) == [] and det.workdir_ is None


# The new process gets this one's devices (conftest's 8 simulated ones): a batch split over
# another number of devices is compiled into other programs, whose floats may differ in the
# last bit.
PICKLED = r"""
import pickle, sys
import jax
import numpy as np
from aejax import parallel
parallel.configure(cpu_devices=int(sys.argv[4]))
det = pickle.loads(open(sys.argv[1], "rb").read())
np.save(sys.argv[3], det.decision_function(np.load(sys.argv[2])))
"""


@pytest.mark.slow
def test_a_pickled_detector_scores_the_same_in_a_new_process(fitted, digits, tmp_path):
    import joblib

    _, others = digits
    np.save(tmp_path / "x.npy", others[:100])
    (tmp_path / "det.pkl").write_bytes(pickle.dumps(fitted))
    joblib.dump(fitted, tmp_path / "det.joblib")
    again = joblib.load(tmp_path / "det.joblib")
    np.testing.assert_array_equal(again.decision_scores_, fitted.decision_scores_)
    np.testing.assert_array_equal(again.predict(others), fitted.predict(others))
    argv = [str(tmp_path / "det.pkl"), str(tmp_path / "x.npy"), str(tmp_path / "s.npy")]
    argv.append(str(jax.device_count()))
    subprocess.run([sys.executable, "-c", PICKLED, *argv], check=True, env=os.environ)
    np.testing.assert_array_equal(
        np.load(tmp_path / "s.npy"), fitted.decision_function(others[:100])
    )
    assert clone(fitted).get_params() == fitted.get_params()
    assert not hasattr(clone(fitted), "detector_")


@pytest.mark.slow
def test_flat_rows_and_intensities_as_pyod_users_hold_them(digits):
    normal, others = digits
    rows = normal.reshape(len(normal), -1) / 255.0  # [N, 784] floats in [0, 1]
    det = AutoencoderDetector("dense", epochs=1).fit(rows)
    assert det.n_features_in_ == 784 and det.image_shape_ == (28, 28, 1)
    # The same images as uint8 [N, 28, 28, 1] score the same (intensities back to pixels).
    np.testing.assert_array_equal(
        det.decision_function(rows[:20]), det.decision_function(normal[:20])
    )
    with pytest.raises(
        ValueError, match="X has 783 features, but AutoencoderDetector is expecting 784"
    ):
        det.predict(rows[:, :783])
    with pytest.raises(ValueError, match="not images of shape"):
        AutoencoderDetector(image_shape=(20, 20)).fit(rows)
    json.dumps(det.get_params(), default=str)  # plain parameters

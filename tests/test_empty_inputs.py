"""The Python API on no images: empty results of the right shapes, not a ZeroDivisionError;
fitting on none is one clear error."""

import numpy as np
import pytest

from aejax import AutoencoderDetector

pytestmark = pytest.mark.slow  # fits a small detector


def test_scoring_no_images_gives_empty_results(tmp_path):
    """aejax's Detector scores no images as no rows; the scikit-learn estimator refuses them
    as every scikit-learn estimator does (a ValueError naming the minimum), no
    ZeroDivisionError either way."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (120, 16, 16), np.uint8)
    det = AutoencoderDetector("dense", workdir=tmp_path / "run").fit(images)  # 300 steps
    none = np.zeros((0, 16, 16, 1), np.uint8)
    out = det.detector_.detect(none)
    assert out["score"].shape == (0,) and out["ood"].shape == (0,)
    assert det.detector_.maps(none)["anomaly"].shape == (0, 16, 16)
    for method in ("decision_function", "predict", "p_value", "maps"):
        with pytest.raises(ValueError, match="0 sample.*minimum of 1"):
            getattr(det, method)(none[..., 0])
    # The same detector on images still scores them.
    assert det.decision_function(images[:3]).shape == (3,)


@pytest.mark.parametrize("n", [0, 1])
def test_fitting_on_too_few_images_is_one_line(n, tmp_path):
    with pytest.raises(ValueError, match=f"{n} sample.*minimum of"):
        AutoencoderDetector("dense", workdir=tmp_path / "run").fit(np.zeros((n, 8, 8), np.uint8))
    assert not (tmp_path / "run").exists()

"""The Python API on no images: empty results of the right shapes, not a ZeroDivisionError;
fitting on none is one clear error."""

import numpy as np
import pytest

from aejax import AutoencoderDetector
from aejax.errors import AejaxError

pytestmark = pytest.mark.slow  # fits a small detector


def test_scoring_no_images_gives_empty_results(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (120, 16, 16), np.uint8)
    det = AutoencoderDetector("dense", workdir=tmp_path / "run").fit(images)  # 300 steps
    none = np.zeros((0, 16, 16), np.uint8)
    assert det.decision_function(none).shape == (0,)
    assert det.predict(none).shape == (0,) and det.predict(none).dtype == np.int64
    assert det.p_value(none).shape == (0,)
    assert det.maps(none)["anomaly"].shape == (0, 16, 16)
    # The same detector on images still scores them.
    assert det.decision_function(images[:3]).shape == (3,)


@pytest.mark.parametrize("n", [0, 1])
def test_fitting_on_too_few_images_is_one_line(n, tmp_path):
    with pytest.raises(AejaxError, match=f"fit needs 2 images at least.*got {n}$"):
        AutoencoderDetector("dense", workdir=tmp_path / "run").fit(np.zeros((n, 8, 8), np.uint8))
    assert not (tmp_path / "run").exists()

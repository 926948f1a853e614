"""Our SSIM (attacks/stealth.py, behind the stealth metrics of show-trigger and the attacks'
manifests) against scikit-image's ``structural_similarity`` on real photographs (the ones
scikit-image ships) with real triggers: the same numbers, to float rounding.

scikit-image computes Wang et al.'s SSIM when asked for their Gaussian window (sigma 1.5,
11x11), population covariances and a data range of 255; it filters the whole image and crops
the window's half-width off the map, which leaves exactly our "valid" windows."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from skimage import data
from skimage.metrics import structural_similarity

from tacleaner.attacks import create_attack
from tacleaner.attacks.stealth import ssim

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # colour photographs shipped inside scikit-image
TOLERANCE = 1e-12  # seen: at most 4e-15 (on the whole photographs as on these crops)


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """A 96 x 128 crop from the middle of the photograph: real texture, a fast test."""
    image = getattr(data, name)()
    top, left = (image.shape[0] - 96) // 2, (image.shape[1] - 128) // 2
    return np.ascontiguousarray(image[top:top + 96, left:left + 128])


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=-1 if a.ndim == 3 else None)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("attack", ["badnet", "blended", "sig", "wanet"])
def test_ssim_matches_scikit_image_on_triggered_photographs(name, attack):
    clean = photo(name)
    triggered = np.asarray(create_attack(attack).trigger(clean.copy(), 0))
    assert not np.array_equal(clean, triggered)
    assert ssim(clean, triggered) == pytest.approx(reference_ssim(clean, triggered), abs=TOLERANCE)


@pytest.mark.parametrize("name", [*PHOTOS, "camera"])  # camera: a grey-scale photograph (HxW)
def test_ssim_matches_scikit_image_under_noise_and_dimming(name):
    clean = photo(name)
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    dim = (clean * 0.8).astype(np.uint8)
    for other in (noisy, dim):
        assert ssim(clean, other) == pytest.approx(reference_ssim(clean, other), abs=TOLERANCE)
    assert ssim(clean, clean) == reference_ssim(clean, clean) == pytest.approx(1.0)

"""Evaluation protocols (`medgan_tf.evaluation.protocols`): golden values by hand, SSIM and
MS-SSIM against scikit-image's `structural_similarity` on the same clipped/masked/shifted data."""

import math

import numpy as np
import pytest
from scipy.signal import fftconvolve
from skimage.metrics import structural_similarity

from medgan_tf.evaluation import protocols as P


def _ct_pair(shape=(16, 16, 16), seed=0):
    """A smooth CT-like target in HU, a prediction off by noise, and a cube body mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    target = -200.0 + 40.0 * z + 25.0 * np.sin(y / 2.0) + 30.0 * np.cos(x / 3.0)
    prediction = target + rng.normal(0.0, 20.0, shape)
    mask = np.zeros(shape, dtype=bool)
    mask[2:14, 3:13, 2:15] = True
    return prediction, target, mask


def _shifted(volume, mask, lo, hi):
    # The challenges' SSIM input, written out independently: clip, lo outside the mask, shift to 0.
    return np.where(mask, np.clip(volume, lo, hi), lo) - lo


def test_synthrad2023_mae_and_psnr_golden():
    target = np.full((12, 12, 12), 40.0)
    target[4:8, 4:8, 4:8] = 700.0
    mask = np.zeros(target.shape, dtype=bool)
    mask[2:10, 2:10, 2:10] = True
    prediction = target + 10.0
    prediction[~mask] = 2500.0  # outside the body: must not count
    prediction[5, 5, 5] -= 40.0  # one voxel off by −30 instead of +10
    n = 8**3
    mae = (10.0 * (n - 1) + 30.0) / n
    mse = (100.0 * (n - 1) + 900.0) / n
    got = P.synthrad2023(prediction, target, mask)
    assert got["mae"] == pytest.approx(mae, rel=1e-12)
    assert got["psnr"] == pytest.approx(10.0 * math.log10(4024.0**2 / mse), rel=1e-12)


def test_synthrad2023_psnr_ignores_differences_beyond_the_hu_range():
    prediction, target, mask = _ct_pair()
    target[5, 5, 5], target[6, 6, 6] = 3100.0, -1500.0  # inside the mask, outside [−1024, 3000]
    prediction[5, 5, 5], prediction[6, 6, 6] = 3500.0, -1100.0
    base = P.synthrad2023(prediction, target, mask)
    prediction[5, 5, 5], prediction[6, 6, 6] = 3200.0, -1030.0  # still beyond: same after clipping
    moved = P.synthrad2023(prediction, target, mask)
    assert moved["psnr"] == base["psnr"]
    assert moved["mae"] != base["mae"]  # MAE is not clipped
    prediction[5, 5, 5] = 2900.0  # inside the range: counts
    assert P.synthrad2023(prediction, target, mask)["psnr"] < base["psnr"]


def test_synthrad2023_ssim_matches_skimage():
    prediction, target, mask = _ct_pair()
    x, y = _shifted(prediction, mask, -1024, 3000), _shifted(target, mask, -1024, 3000)
    _, smap = structural_similarity(y, x, win_size=7, data_range=4024.0, full=True)
    expected = smap[3:-3, 3:-3, 3:-3][mask[3:-3, 3:-3, 3:-3]].mean()
    assert P.synthrad2023(prediction, target, mask)["ssim"] == pytest.approx(expected, abs=1e-10)


def test_masked_mean_drops_the_three_voxel_border():
    rng = np.random.default_rng(1)
    smap = rng.uniform(size=(12, 12, 12))
    mask = np.ones(smap.shape, dtype=bool)
    changed = smap.copy()
    changed[:3], changed[:, -3:], changed[:, :, 1] = -5.0, 9.0, 7.0
    assert P.masked_mean(changed, mask) == P.masked_mean(smap, mask)
    assert P.masked_mean(smap, mask) == pytest.approx(smap[3:9, 3:9, 3:9].mean())


def test_prediction_outside_the_mask_does_not_matter():
    prediction, target, mask = _ct_pair()
    other = prediction.copy()
    other[~mask] = 1234.0
    for name in ("synthrad2023", "synthrad2025"):
        a, b = P.PROTOCOLS[name].function(prediction, target, mask), P.PROTOCOLS[name].function(
            other, target, mask)
        assert a == b


def test_identical_volumes_are_perfect():
    _, target, mask = _ct_pair()
    a = P.synthrad2023(target, target, mask)
    b = P.synthrad2025(target, target, mask)
    assert a["mae"] == 0 and b["mae"] == 0
    assert a["psnr"] == math.inf and b["psnr"] == math.inf
    assert a["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert b["ms_ssim"] == pytest.approx(1.0, abs=1e-12)


def _reference_ms_ssim(prediction, target, mask):
    """SynthRAD2025's masked MS-SSIM written with skimage maps and scipy's fftconvolve."""
    x, y = _shifted(prediction, mask, -1024, 3071), _shifted(target, mask, -1024, 3071)
    pads = [((97 - n) // 2, 97 - n - (97 - n) // 2) for n in x.shape]
    x, y, m = (np.pad(a, pads, mode="edge") for a in (x, y, mask.astype(float)))
    box = np.ones((2, 2, 2)) / 8
    values = []
    for w in (0.0448, 0.2856, 0.3001, 0.2363, 0.1333):
        _, smap = structural_similarity(y, x, win_size=7, data_range=4095.0, full=True)
        values.append((smap**w)[3:-3, 3:-3, 3:-3][m[3:-3, 3:-3, 3:-3] > 0].mean())
        x, y = (fftconvolve(a, box, mode="same")[::2, ::2, ::2] for a in (x, y))
        m = m[::2, ::2, ::2]
    return float(np.prod(np.clip(values, 0, 1)))


def test_synthrad2025_golden_and_ms_ssim_matches_skimage():
    prediction, target, mask = _ct_pair(shape=(12, 12, 12))
    mask = mask[:12, :12, :12]
    prediction[mask] = np.clip(prediction[mask], -2000, 2000)
    prediction[0, 0, 0] = 5000.0  # outside the mask
    got = P.synthrad2025(prediction, target, mask)
    diff = (prediction - target)[mask]
    assert got["mae"] == pytest.approx(np.abs(diff).mean(), rel=1e-12)
    assert got["psnr"] == pytest.approx(10 * math.log10(4095.0**2 / np.mean(diff**2)), rel=1e-12)
    assert got["ms_ssim"] == pytest.approx(_reference_ms_ssim(prediction, target, mask), abs=1e-9)
    assert 0.0 < got["ms_ssim"] < 1.0


def test_pet_golden_values_and_region_errors():
    rng = np.random.default_rng(2)
    target = 1000.0 + 200.0 * rng.uniform(size=(12, 12, 12))
    labels = np.zeros(target.shape, dtype=int)
    labels[2:6, 2:6, 2:6] = 1
    labels[7:10, 7:10, 7:10] = 2
    prediction = target.copy()
    prediction[labels == 1] *= 1.1
    prediction[8, 8, 8] += 300.0
    got = P.pet(prediction, target, labels=labels, suv_factor=0.002, voxel_volume_ml=0.064)
    rmse = np.sqrt(np.mean((target - prediction) ** 2))
    assert got["nrmse"] == pytest.approx(rmse / (target.max() - target.min()), rel=1e-12)
    assert got["psnr"] == pytest.approx(20 * np.log10(target.max() / rmse), rel=1e-12)
    expected_ssim = structural_similarity(
        target, prediction, win_size=7, data_range=target.max() - target.min())
    assert got["ssim"] == pytest.approx(expected_ssim, abs=1e-10)
    for key in ("suvmean_1", "suvmax_1", "activity_1"):
        assert got[key] == pytest.approx(10.0, rel=1e-9)
    region = target[labels == 2]
    assert got["suvmean_2"] == pytest.approx(100 * 300.0 / region.sum(), rel=1e-9)
    assert got["activity_2"] == pytest.approx(got["suvmean_2"], rel=1e-9)
    new_max = max(region.max(), target[8, 8, 8] + 300.0)
    assert got["suvmax_2"] == pytest.approx(100 * (new_max - region.max()) / region.max())


def test_body_mask_fills_holes_and_drops_other_blobs():
    ct = np.full((20, 20, 20), -1000.0)
    ct[3:17, 3:17, 3:17] = 0.0
    ct[8:12, 8:12, 8:12] = -1000.0  # enclosed air
    ct[:, 5:7, 5:7] = -1000.0  # an airway through the whole volume (open at both ends)
    ct[0:2, 0:2, 0:2] = 500.0  # a separate blob (table, another object)
    mask, description = P.body_mask(ct)
    expected = np.zeros(ct.shape, dtype=bool)
    expected[3:17, 3:17, 3:17] = True
    np.testing.assert_array_equal(mask, expected)
    assert "-300" in description and "largest" in description
    assert not P.body_mask(np.full((4, 4, 4), -1000.0))[0].any()


def test_protocol_table_names_every_metric_its_function_returns():
    prediction, target, mask = _ct_pair(shape=(12, 12, 12))
    mask = mask[:12, :12, :12]
    for name, protocol in P.PROTOCOLS.items():
        result = protocol.function(prediction, target, mask)
        if name == "paper":  # 12² slices: VIF needs ≥ 41², LPIPS has no weights here
            assert set(result) == set(protocol.metrics) - {"vif", "lpips"}
        else:
            assert set(protocol.metrics) == set(result), name
        assert all(isinstance(v, float) for v in result.values())

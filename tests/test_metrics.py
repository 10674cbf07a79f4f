"""The paper's metrics against independent implementations and hand-computed values.

Tolerances: SSIM within 1e-6 (absolute) and PSNR/MSE within 1e-6 (relative) of scikit-image;
VIF and UQI (sewar convention) within 1e-9 (relative) of sewar; the Wang–Bovik UQI within 1e-9 of a
brute-force loop over explicit 8×8 windows written straight from the paper's formula.
"""

import math
import warnings

import numpy as np
import pytest

from medgan_tf import metrics



# The independent implementations are optional: only the comparisons with them are skipped when
# one is missing, never the hand-computed tests.
def _sewar():
    return pytest.importorskip("sewar")


def _skimage_metrics():
    return pytest.importorskip("skimage.metrics")


def _random_pair(rng, shape=(64, 64)):
    target = rng.uniform(0, 255, shape)
    return np.clip(target + rng.normal(0, 20, shape), 0, 255), target


def _structured_pair(rng, shape=(64, 72)):
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    target = 127.5 + 100 * np.sin(columns / 5.0) * np.cos(rows / 7.0)
    return np.clip(target + rng.normal(0, 6, shape), 0, 255), target


def _phantom_pair(rng, shape=(64, 64)):
    """Disk on an exactly-zero background, as in PET/CT slices: flat windows on both sides."""
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    disk = (rows - 30) ** 2 + (columns - 34) ** 2 < 18**2
    target = np.where(disk, 180.0, 0.0) + np.where((rows - 28) ** 2 + (columns - 30) ** 2 < 25, 60.0, 0.0)
    output = np.where(disk, np.clip(target + rng.normal(0, 10, shape), 0, 255), 0.0)
    return output, target


PAIRS = {"random": _random_pair, "structured": _structured_pair, "phantom": _phantom_pair}


@pytest.fixture(params=sorted(PAIRS))
def pair(request):
    return PAIRS[request.param](np.random.default_rng(7))


def test_metric_table_holds_the_papers_six_then_physical_mae():
    assert metrics.metric_names(paper=True) == ("ssim", "psnr", "mse", "vif", "uqi", "lpips")
    assert metrics.metric_names(scale="physical") == ("mae",)
    assert metrics.metric_names(validation=True) == ("ssim", "psnr", "mse")
    assert metrics.METRICS.get("lpips").available()[0] is False
    assert metrics.minimum_slice_size() == 41  # VIF's four scales


def test_ssim_matches_scikit_image(pair):
    skimage_metrics = _skimage_metrics()
    output, target = pair
    expected = skimage_metrics.structural_similarity(
        target, output, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert metrics.ssim(output, target) == pytest.approx(expected, abs=1e-6)
    assert metrics.ssim(output, target) < 0.999  # not a trivially perfect pair


def test_psnr_and_mse_match_scikit_image(pair):
    skimage_metrics = _skimage_metrics()
    output, target = pair
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(target, output, data_range=255)
    assert metrics.psnr(output, target) == pytest.approx(expected_psnr, rel=1e-6)
    assert metrics.mse(output, target) == pytest.approx(skimage_metrics.mean_squared_error(target, output), rel=1e-6)


def test_vif_matches_sewar_vifp(pair):
    sewar = _sewar()
    output, target = pair
    expected = sewar.vifp(target, output, sigma_nsq=2)
    assert metrics.vif(output, target) == pytest.approx(expected, rel=1e-9)


def test_uqi_sewar_convention_matches_sewar(pair):
    sewar = _sewar()
    output, target = pair
    assert metrics.uqi(output, target, convention="sewar") == pytest.approx(sewar.uqi(target, output, ws=8), rel=1e-9)


def _uqi_by_explicit_windows(output, target, window_size=8):
    """Wang & Bovik 2002, eq. 1, window by window; the windows sewar.uqi averages (its crop of a
    same-size box-filter map keeps the windows starting at 0 … n − window_size − 1)."""
    scores = []
    for top in range(output.shape[0] - window_size):
        for left in range(output.shape[1] - window_size):
            x = target[top : top + window_size, left : left + window_size]
            y = output[top : top + window_size, left : left + window_size]
            mean_x, mean_y = x.mean(), y.mean()
            variance_x, variance_y = x.var(), y.var()
            covariance = ((x - mean_x) * (y - mean_y)).mean()
            if variance_x + variance_y == 0:
                squares = mean_x**2 + mean_y**2
                scores.append(1.0 if squares == 0 else 2 * mean_x * mean_y / squares)
            else:
                scores.append(
                    4 * covariance * mean_x * mean_y / ((variance_x + variance_y) * (mean_x**2 + mean_y**2))
                )
    return float(np.mean(scores))


@pytest.mark.parametrize("name, shape", [(name, (28, 30)) for name in sorted(PAIRS)] + [("phantom", (64, 64))])
def test_uqi_matches_explicit_window_formula(name, shape):
    # The 64² phantom has all-zero windows right after the bright disk: a running-sum box filter
    # gives them a mean of ~1e-15 and a score of 0 instead of 1 (this case once failed by 0.2).
    output, target = PAIRS[name](np.random.default_rng(5), shape=shape)
    assert metrics.uqi(output, target) == pytest.approx(_uqi_by_explicit_windows(output, target), rel=1e-9)


def test_uqi_conventions_differ_as_documented():
    # Independent noise: Wang–Bovik's correlation term makes UQI ≈ 0, while sewar's arithmetic is
    # dominated by the luminance term and stays near 1.
    rng = np.random.default_rng(0)
    output, target = rng.uniform(100, 200, (64, 64)), rng.uniform(100, 200, (64, 64))
    assert abs(metrics.uqi(output, target)) < 0.05
    assert metrics.uqi(output, target, convention="sewar") > 0.9
    with pytest.raises(ValueError, match="convention"):
        metrics.uqi(output, target, convention="matlab")


@pytest.mark.parametrize("name", ["random", "structured", "phantom", "constant"])
def test_identical_images_score_perfectly(name):
    image = np.full((48, 48), 93.0) if name == "constant" else PAIRS[name](np.random.default_rng(1))[1]
    assert metrics.ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert metrics.uqi(image, image) == pytest.approx(1.0, abs=1e-12)
    # VIFP floors the distortion variance at 1e-10 (as the reference code does), so identical
    # textured images score 1 − O(1e-11) rather than exactly 1.
    assert metrics.vif(image, image) == pytest.approx(1.0, abs=1e-9)
    assert metrics.mse(image, image) == 0.0
    assert metrics.psnr(image, image) == math.inf


def test_mse_and_psnr_on_a_hand_computed_2x2_example():
    output = np.zeros((2, 2))
    target = np.array([[10.0, 20.0], [30.0, 40.0]])
    # (10² + 20² + 30² + 40²) / 4 = 3000 / 4 = 750;  10·log10(255² / 750) = 19.38019…
    assert metrics.mse(output, target) == 750.0
    assert metrics.psnr(output, target) == pytest.approx(19.380190974762105, rel=1e-12)
    assert metrics.psnr(output, target, data_range=1.0) == pytest.approx(10 * math.log10(1 / 750), rel=1e-12)


def test_mae_physical_hand_computed():
    output = np.array([[0.0, -1000.0], [500.0, 20.0]])
    assert metrics.mae_physical(output, np.zeros((2, 2))) == (0 + 1000 + 500 + 20) / 4


def test_to_255_maps_the_normalized_range_and_clips():
    values = np.array([-1.0, 0.0, 1.0, 1.5, -3.0], dtype=np.float32)
    np.testing.assert_array_equal(metrics.to_255(values), [0.0, 127.5, 255.0, 255.0, 0.0])
    np.testing.assert_array_equal(metrics.to_255(values, clip=False)[3:], [318.75, -255.0])
    assert metrics.to_255(values).dtype == np.float64


def test_channel_axis_is_accepted_and_bad_shapes_are_named():
    rng = np.random.default_rng(2)
    output, target = _random_pair(rng, (48, 48))
    assert metrics.ssim(output[..., None], target[..., None]) == metrics.ssim(output, target)
    with pytest.raises(ValueError, match=r"\(48, 48\) and \(48, 40\)"):
        metrics.mse(output, target[:, :40])
    with pytest.raises(ValueError, match=r"received shape \(2, 48, 48\)"):
        metrics.mse(np.stack([output, output]), target)
    with pytest.raises(ValueError, match="at least 41"):
        metrics.vif(output[:30, :30], target[:30, :30])


def test_slice_metrics_returns_every_computed_metric():
    output, target = _structured_pair(np.random.default_rng(4))
    scores = metrics.slice_metrics(output, target)
    assert tuple(scores) == ("ssim", "psnr", "mse", "vif", "uqi")
    assert scores["ssim"] == metrics.ssim(output, target)
    assert scores["vif"] == metrics.vif(output, target)


def test_lpips_is_reported_unavailable_with_a_reason(monkeypatch):
    monkeypatch.delenv(metrics.LPIPS_WEIGHTS_ENV, raising=False)
    available, reason = metrics.lpips_availability()
    assert available is False and "pretrained" in reason
    monkeypatch.setenv(metrics.LPIPS_WEIGHTS_ENV, "/nowhere/lpips.h5")
    available, reason = metrics.lpips_availability()
    assert available is False and "/nowhere/lpips.h5" in reason


def test_sewar_dtype_warning_does_not_matter():
    # Guard for the comparisons above: sewar warns on mixed dtypes but casts both to float64.
    sewar = _sewar()
    output, target = _random_pair(np.random.default_rng(5), (48, 48))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = sewar.vifp(target.astype(np.float32), output)
    assert metrics.vif(output, target.astype(np.float32)) == pytest.approx(expected, rel=1e-6)


def test_validation_means_are_the_slice_metrics_on_the_paper_scale():
    rng = np.random.default_rng(3)
    outputs = rng.uniform(-1, 1, (3, 16, 16, 1)).astype(np.float32)
    targets = np.clip(outputs + rng.normal(0, 0.1, outputs.shape), -1, 1).astype(np.float32)
    targets[2] = outputs[2]  # an exact slice: PSNR +inf is left out of the mean
    means = metrics.validation_means(outputs, targets)
    ssim = [metrics.ssim(metrics.to_255(o), metrics.to_255(t)) for o, t in zip(outputs, targets)]
    psnr = [metrics.psnr(metrics.to_255(o), metrics.to_255(t)) for o, t in zip(outputs[:2], targets[:2])]
    np.testing.assert_allclose(means[0], np.mean(ssim), rtol=1e-6)
    np.testing.assert_allclose(means[1], np.mean(psnr), rtol=1e-6)
    # SSIM on [-1, 1] with data range 2 is not the paper's: the luminance term changes under a shift.
    shifted = np.mean([metrics.ssim(o, t, data_range=2.0) for o, t in zip(outputs, targets)])
    assert abs(shifted - means[0]) > 1e-3

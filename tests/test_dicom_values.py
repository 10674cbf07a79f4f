"""The values of a DICOM output: every value within half a rescale step for any range, CT as
int16 HU, and a round trip through pydicom and dcm2niix for every modality of the table."""

import numpy as np
import pydicom
import pytest

from medgan_tf import modalities
from medgan_tf.data.io import Volume, write_output
from medgan_tf.data.io.dicom_values import decimal_string, quantize

from helpers import dcm2niix_nifti, oblique_affine, same_grid, smooth_volume

# (low, high) kinds the sweep draws from: positive far from 0, negative, mixed, constant, tiny, huge.
KINDS = ("positive", "negative", "mixed", "constant", "tiny", "huge offset")


def random_range(rng, kind):
    scale = 10.0 ** rng.uniform(-9, 9)
    if kind == "positive":
        low = scale * rng.uniform(0.01, 100)
    elif kind == "negative":
        low = -scale * rng.uniform(1, 100)
    elif kind == "tiny":
        low, scale = rng.uniform(-1, 1) * 1e-6, 10.0 ** rng.uniform(-14, -8)
    elif kind == "huge offset":  # a range small against its distance from 0
        low, scale = rng.choice([-1, 1]) * 10.0 ** rng.uniform(3, 12), 10.0 ** rng.uniform(-3, 1)
    else:
        low = -scale * rng.uniform(0, 1)
    high = low if kind == "constant" else low + scale * rng.uniform(0.001, 10)
    return low, high


def encodings():
    """Every encoding of the table, and the free one (no fixed intercept) twice: signed and not."""
    table = {key: entry.dicom_encoding for key, entry in modalities.MODALITIES.items()}
    return {**table, "free": modalities.DicomEncoding(), "free int16": modalities.DicomEncoding(signed=True)}


@pytest.mark.parametrize("kind", KINDS)
def test_every_value_comes_back_within_half_a_step(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    for trial in range(300):
        low, high = random_range(rng, kind)
        values = np.concatenate([[low, high], rng.uniform(low, high, 40)])
        for name, encoding in encodings().items():
            stored, slope, intercept = quantize(values, signed=encoding.signed, intercept=encoding.intercept,
                                                unit_slope=encoding.unit_slope)
            assert float(decimal_string(slope)) == slope and float(decimal_string(intercept)) == intercept
            assert stored.dtype in (np.int16, np.uint16) and (stored.dtype == np.int16 or not encoding.signed)
            back = stored.astype(np.float64) * slope + intercept  # what a reader computes from the tags
            rounding = 8 * np.finfo(np.float64).eps * max(abs(intercept), abs(low), abs(high))
            error = float(np.max(np.abs(back - values)))
            assert error <= slope / 2 + rounding, (kind, trial, name, low, high, slope, intercept, error)
            # A free intercept spreads the range over the integers (unless the DS tag's 12 digits
            # cannot place the intercept closer than the range is wide).
            if high - low > 1e-6 * max(abs(low), abs(high)) and encoding.intercept is None:
                assert int(stored.max()) - int(stored.min()) >= 30000, (name, low, high, slope, intercept)


def test_hounsfield_units_stay_int16_at_slope_1():
    stored, slope, intercept = quantize(np.array([-1000.0, 0.0, 1500.4, 3000.0]), signed=True, intercept=-1024.0,
                                        unit_slope=True)
    assert (slope, intercept, stored.tolist(), stored.dtype) == (1.0, -1024.0, [24, 1024, 2524, 4024], np.int16)


def test_an_all_positive_range_keeps_sixteen_bits():
    """The loss this guards against: an MR spanning 202–371 stored as the integers 1 and 2."""
    values = np.linspace(202.0, 371.0, 1000)
    for intercept in (None, 0.0):
        stored, slope, fixed = quantize(values, signed=False, intercept=intercept)
        assert len(np.unique(stored)) == 1000 and slope < 0.01


# What a translation into each modality's unit spans (the acceptance ranges).
ROUND_TRIP_RANGES = {"HU": (-1000.0, 3000.0), "a.u.": (200.0, 400.0), "SUV": (0.1, 20.0)}


@pytest.mark.parametrize("key", [key for key, entry in modalities.MODALITIES.items() if entry.unit in ROUND_TRIP_RANGES])
def test_pydicom_and_dcm2niix_read_back_what_was_written(key, tmp_path):
    entry = modalities.get(key)
    low, high = ROUND_TRIP_RANGES[entry.unit]
    array = smooth_volume((20, 16, 4), np.random.default_rng(2), low, high).astype(np.float32)
    affine = oblique_affine((1.1, 0.9, 2.5))
    folder = write_output(Volume(array, affine, entry.dicom, entry.unit), tmp_path / "series")
    series = sorted((pydicom.dcmread(str(p)) for p in folder.iterdir()), key=lambda ds: int(ds.InstanceNumber))
    slope = float(series[0].RescaleSlope)
    if entry.hounsfield:
        assert series[0].pixel_array.dtype == np.int16 and slope == 1.0 and series[0].RescaleType == "HU"
    # pydicom: the rescaled slices, in order along the normal (k here), are the written values.
    ours = np.stack([ds.pixel_array.T * slope + float(ds.RescaleIntercept) for ds in series], axis=-1)
    assert np.max(np.abs(ours - array)) <= slope / 2 + 1e-6 * high
    theirs, written, affine_error = same_grid(dcm2niix_nifti(folder, tmp_path / "dcm2niix"), array, affine)
    assert affine_error <= 1e-3 and np.std(written) > 0
    assert np.max(np.abs(theirs - written)) <= slope / 2 + 1e-6 * high

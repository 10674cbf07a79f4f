"""What the DICOM reader (`dicom.py`) and writer (`dicom_writer.py`) both need from a header:
the LPS → RAS flip of patient coordinates and the SUV factor of a PET series."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np

# LPS (DICOM patient coordinates) → RAS (nibabel world coordinates): flip x and y; its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def suv_factor(ds: Any) -> tuple[float | None, str]:
    """Bq/ml → SUV body-weight factor: weight [g] / (injected dose [Bq] decayed to the image time).

    SUV_bw = C(t) · W / (D · 2^(−Δt / T½)), with Δt the time from injection to the series start
    when the images are decay-corrected to the series start (DecayCorrection = START), Δt = 0 when
    corrected to the administration time (ADMIN).
    """
    try:
        weight_kg = float(ds.get("PatientWeight") or 0.0)
        info = ds.RadiopharmaceuticalInformationSequence[0]
        dose = float(info.get("RadionuclideTotalDose") or 0.0)
        half_life = float(info.get("RadionuclideHalfLife") or 0.0)
        start = info.get("RadiopharmaceuticalStartTime") or str(info.get("RadiopharmaceuticalStartDateTime", ""))[8:]
        series_time = ds.get("SeriesTime") or ds.get("AcquisitionTime")
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None, "no RadiopharmaceuticalInformationSequence"
    if weight_kg <= 0 or dose <= 0 or half_life <= 0:
        return None, "missing patient weight, injected dose or half-life"
    correction = str(ds.get("DecayCorrection", "START")).strip().upper()
    if correction == "ADMIN":
        elapsed = 0.0
    elif correction == "START":
        if not start or not series_time:
            return None, "missing injection or series time"
        try:
            elapsed = _seconds(str(series_time)) - _seconds(str(start))
        except ValueError:
            return None, "unreadable injection or series time"
        if elapsed < 0:  # acquisition after midnight
            elapsed += 24 * 3600
    else:
        return None, f"DecayCorrection {correction!r} not supported for SUV"
    decayed_dose = dose * 2.0 ** (-elapsed / half_life)
    return weight_kg * 1000.0 / decayed_dose, ""


def _seconds(dicom_time: str) -> float:
    """DICOM TM 'HHMMSS.ffffff' (or with colons) → seconds after midnight."""
    text = dicom_time.strip().replace(":", "")
    if len(text) < 2:
        raise ValueError(dicom_time)
    hours = int(text[0:2])
    minutes = int(text[2:4] or 0) if len(text) >= 4 else 0
    seconds = float(text[4:] or 0) if len(text) > 4 else 0.0
    return float(datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds).total_seconds())

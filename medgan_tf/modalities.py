"""The modality table: everything the code needs to know about one kind of image, in one entry.

A `Modality` states its DICOM Modality code and SOP Class, its physical unit, its default
normalization to [-1, 1], how a body mask is found in it, how the DICOM writer encodes its values,
and a plausibility check of a volume's values. Tasks (`medgan_tf.tasks`) name their source and
target by the keys of `MODALITIES`; the converter, `translate` and `evaluate --pairs` apply the
check, so a volume that cannot be the declared modality (a NIfTI file says nothing about its
modality) is refused with a reason instead of being trained on.

Built in: CT and CBCT (in HU), MR (arbitrary units), PT (SUV or Bq/ml). Adding a modality (NM,
SPECT, …) is one `MODALITIES.add(key, Modality(...))`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

import numpy as np

from medgan_tf.errors import UserError
from medgan_tf.registry import Registry

# A plausibility check: (values of a volume in the modality's unit) → the reason it cannot be this
# modality, or None when it can.
Check = Callable[[np.ndarray], "str | None"]


@dataclasses.dataclass(frozen=True)
class Modality:
    """One kind of image.

    key:           the name tasks use (`source = "MR"`), also `--extra-source-modalities`.
    name:          what messages call it.
    dicom:         the DICOM Modality (0008,0060) of its series: CBCT is stored as "CT".
    sop_class:     the SOP Class UID the DICOM writer gives its series (PS3.4 B.5).
    unit:          its physical unit.
    normalization: keyword arguments of `config.NormalizationConfig`: its default map to [-1, 1].
    mask_threshold: (volume) → the value above which a voxel is body: the largest connected
                   component above it, holes filled, is the body mask (masked protocols without a
                   given mask).
    mask_rule:     how the threshold is chosen, in words (reports say it).
    hounsfield:    the DICOM writer stores it as signed HU (int16, slope 1, intercept −1024, the
                   RescaleType HU); otherwise values keep their own unit through one
                   RescaleSlope/Intercept per series.
    check:         the plausibility check of a volume's values (None: any finite volume).
    protocol:      the evaluation protocol (`medgan_tf.evaluation.protocols`) for targets of this
                   modality, unless a task names its own.
    encoding:      how the DICOM writer stores and labels its images (`DicomEncoding`).
    """

    key: str
    name: str
    dicom: str
    sop_class: str
    unit: str
    normalization: Mapping[str, Any]
    mask_threshold: Callable[[np.ndarray], float]
    mask_rule: str
    hounsfield: bool = False
    check: Check | None = None
    protocol: str = "paper"
    encoding: "DicomEncoding | None" = None

    @property
    def dicom_encoding(self) -> "DicomEncoding":
        """Its `encoding`, or the one for any other image (values spread over 16 bits, no window)."""
        return self.encoding or DicomEncoding()

    def accepts(self, dicom_modality: str) -> bool:
        """Whether a volume read with this DICOM Modality code (or "OT": unknown, as from NIfTI)
        may be this modality."""
        return dicom_modality in ("OT", self.dicom, self.key)

    def check_modality(self, volume: Any, what: str) -> None:
        """UserError when `volume` (a `medgan_tf.data.io.Volume`) was read as another DICOM Modality."""
        if not self.accepts(volume.modality):
            raise UserError(f"{what} has modality {shown_code(volume.modality)}; expected {self.key} "
                            f"(DICOM Modality {self.dicom})")

    def check_volume(self, volume: Any, what: str) -> None:
        """UserError when `volume` cannot be this modality: another DICOM Modality, or values that
        fail the plausibility check."""
        self.check_modality(volume, what)
        self.plausible(volume.array, what)

    def plausible(self, values: np.ndarray, what: str) -> None:
        """UserError naming `what`, this modality and the reason when `values` cannot be it."""
        reason = self.check(np.asarray(values)) if self.check is not None else None
        if reason:
            raise UserError(f"{what} cannot be {self.name} ({self.key} check): {reason}")


# A window rule: (values as the DICOM series stores them, after rescale) → ((center, width, name), …).
WindowRule = Callable[[np.ndarray], "tuple[tuple[float, float, str], ...]"]


@dataclasses.dataclass(frozen=True)
class DicomEncoding:
    """How the DICOM writer stores one modality's values and labels its derived images.

    image_type:  ImageType of a synthetic image of this IOD (PS3.3 C.8): value 1 DERIVED; value 2
                 PRIMARY where the IOD allows nothing else (PET), else SECONDARY; value 3 where the
                 IOD requires one (CT: AXIAL, MR: OTHER).
    intercept:   the RescaleIntercept every series keeps (PET: 0, its image module requires it;
                 CT: −1024, as scanners store HU), or None: chosen per series so the values use
                 the whole 16-bit range.
    unit_slope:  slope 1 whenever the range fits at `intercept` (CT: exact to 1 HU); otherwise
                 the range is spread over the integers and the error is at most half a step.
    signed:      always int16 (CT); otherwise int16 only when a value lies below the intercept.
    windows:     the Window Center/Width pairs the series carries, with their explanations.
    window_rule: the same, in words.
    """

    image_type: tuple[str, ...] = ("DERIVED", "SECONDARY", "OTHER")
    intercept: float | None = None
    unit_slope: bool = False
    signed: bool = False
    windows: WindowRule | None = None
    window_rule: str = "none"


def fixed_windows(*windows: tuple[float, float, str]) -> WindowRule:
    """The same windows for every series (CT: soft tissue, bone)."""
    return lambda _values: tuple(windows)


def range_window(values: np.ndarray) -> tuple[tuple[float, float, str], ...]:
    """One window from the lowest value (or 0, whichever is lower) to the highest (PET activity)."""
    low, high = min(float(np.min(values)), 0.0), float(np.max(values))
    return ((low + high) / 2, max(high - low, 1e-6), "RANGE"),


def percentile_window(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[tuple[float, float, str], ...]:
    """One window over the 1st…99th percentile of the values (MR, whose scale is arbitrary)."""
    bottom, top = (float(v) for v in np.percentile(values, [low, high]))
    return ((bottom + top) / 2, max(top - bottom, 1e-6), f"P{low:g}-P{high:g}"),


MODALITIES: Registry[Modality] = Registry("modality")


def get(key: str) -> Modality:
    """The modality `key`; a UserError listing the registered ones otherwise."""
    if key not in MODALITIES:
        raise UserError(f"unknown modality {key!r}; expected one of {', '.join(MODALITIES.names())}")
    return MODALITIES.get(key)


def shown_code(code: Any) -> str:
    """A modality code as read from a header, if it looks like one (never free text: a shifted
    header field may hold a name)."""
    return str(code) if re.fullmatch(r"[A-Z0-9_]{1,16}", str(code)) else "(not a modality code)"


def by_dicom(code: str) -> Modality | None:
    """The first modality stored under DICOM Modality `code` (CT for "CT"), or None."""
    return next((m for _, m in MODALITIES.items() if m.dicom == code), None)


# --------------------------------------------------------------------------- plausibility checks


def _fraction(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) / max(mask.size, 1)


def hounsfield_check(air_at_most: float, lowest: float | None, lowest_share: float = 0.01) -> Check:
    """A CT-like check: some air (≥ 0.1 % of voxels at or below `air_at_most` HU: the air around
    and inside a body is about −1000 HU), and — when `lowest` is given — at most `lowest_share` of
    the voxels below `lowest` HU, not counting the volume's minimum when that is a padding value
    (scanners fill outside the reconstructed field of view with −1024, −2048 or −3024)."""

    def check(values: np.ndarray) -> str | None:
        values = np.asarray(values, np.float32)
        low = float(np.min(values))
        if _fraction(values <= air_at_most) < 1e-3:
            return (f"no air: fewer than 0.1 % of its voxels are ≤ {air_at_most:g} HU (its values run from {low:.4g} "
                    f"to {float(np.max(values)):.4g}), but a CT shows air (about −1000 HU) around and inside the body; "
                    "is it in HU (rescale slope and intercept applied), and is it this modality?")
        if lowest is not None:
            below = (values < lowest) & (values != low)
            share = _fraction(below)
            if share > lowest_share:
                return (f"{share:.1%} of its voxels lie below {lowest:g} HU and are not one padding value (nothing "
                        "is less dense than air, about −1000 HU); is it in HU?")
        return None

    return check


def activity_check(max_negative_share: float = 0.05) -> Check:
    """A PET check: activity is ≥ 0; reconstruction noise gives small negative values, but the
    negative voxels' sum must stay under `max_negative_share` of the positive voxels' sum (a
    z-scored MR, or an image of signed differences, fails). An all-zero volume is refused."""

    def check(values: np.ndarray) -> str | None:
        values = np.asarray(values, np.float64)
        positive = float(values[values > 0].sum())
        negative = float(-values[values < 0].sum())
        if positive <= 0:
            return f"no activity: every voxel is ≤ 0 (highest {float(values.max()):.4g})"
        if negative > max_negative_share * positive:
            return (f"its negative voxels sum to {negative / positive:.0%} of its positive ones (reconstruction noise "
                    f"gives at most {max_negative_share:.0%}), but activity is never negative; is it a normalized "
                    "(e.g. z-scored) image of another modality?")
        return None

    return check


def varying_check(values: np.ndarray) -> str | None:
    """Any image with contrast: refused when constant (nothing to translate)."""
    values = np.asarray(values)
    if values.size and float(np.max(values)) == float(np.min(values)):
        return f"every voxel is {float(np.min(values)):.6g} (no contrast)"
    return None


def _both(*checks: Check) -> Check:
    def check(values: np.ndarray) -> str | None:
        return next((reason for reason in (c(values) for c in checks) if reason), None)

    return check


def _relative_threshold(fraction: float, percentile: float = 99.5) -> Callable[[np.ndarray], float]:
    def threshold(volume: np.ndarray) -> float:
        return fraction * float(np.percentile(np.asarray(volume, np.float32), percentile))

    return threshold


# --------------------------------------------------------------------------- the built-in table

# CT window −1000…2000 HU: air to dense cortical bone (the paper's PET→CT preset).
_HU_WINDOW = {"kind": "window", "low": -1000.0, "high": 2000.0, "unit": "HU"}
# CT in DICOM: int16 HU at slope 1, intercept −1024; the soft-tissue (40/400) and bone (400/1800) windows.
_HU_ENCODING = DicomEncoding(
    ("DERIVED", "SECONDARY", "AXIAL"), intercept=-1024.0, unit_slope=True, signed=True,
    windows=fixed_windows((40.0, 400.0, "SOFT TISSUE"), (400.0, 1800.0, "BONE")),
    window_rule="soft tissue (centre 40, width 400 HU) and bone (400/1800 HU)")

MODALITIES.add("CT", Modality(
    "CT", "CT", "CT", "1.2.840.10008.5.1.4.1.1.2", "HU", _HU_WINDOW,
    mask_threshold=lambda _: -300.0, mask_rule="HU > -300", hounsfield=True,
    check=_both(varying_check, hounsfield_check(air_at_most=-900.0, lowest=-1100.0)), protocol="synthrad2023",
    encoding=_HU_ENCODING))
# Cone-beam CT: stored as a CT series (same SOP Class); its HU are less exact (scatter, cupping),
# so air is looked for up to −800 HU and streaks far below air are allowed.
MODALITIES.add("CBCT", Modality(
    "CBCT", "cone-beam CT", "CT", "1.2.840.10008.5.1.4.1.1.2", "HU", _HU_WINDOW,
    mask_threshold=lambda _: -300.0, mask_rule="HU > -300", hounsfield=True,
    check=_both(varying_check, hounsfield_check(air_at_most=-800.0, lowest=None)), protocol="synthrad2023",
    encoding=_HU_ENCODING))
MODALITIES.add("MR", Modality(
    "MR", "MR", "MR", "1.2.840.10008.5.1.4.1.1.4", "a.u.",
    {"kind": "percentile", "percentile_low": 0.5, "percentile": 99.5, "unit": "a.u."},
    mask_threshold=_relative_threshold(0.1), mask_rule="signal > 10 % of its 99.5th percentile",
    check=varying_check,
    encoding=DicomEncoding(("DERIVED", "SECONDARY", "OTHER"), windows=percentile_window,
                           window_rule="1st to 99th percentile of the series' values")))
MODALITIES.add("PT", Modality(
    "PT", "PET", "PT", "1.2.840.10008.5.1.4.1.1.128", "SUV",
    {"kind": "scale", "percentile": 99.5, "unit": "SUV"},
    mask_threshold=_relative_threshold(0.05), mask_rule="activity > 5 % of its 99.5th percentile",
    check=activity_check(), protocol="pet",
    encoding=DicomEncoding(("DERIVED", "PRIMARY"), intercept=0.0, windows=range_window,
                           window_rule="0 (or the lowest value, when below 0) to the highest value")))

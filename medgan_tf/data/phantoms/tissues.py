"""Tissue labels of the phantoms and each tissue's value in CT (HU), FDG PET (SUV) and T1 MR.

One label map per patient drives every modality (paper §3.1: PET and CT of the same anatomy).
CT numbers are textbook values for unenhanced CT; bone takes a smooth density field instead of one
number (cortical 1000–1900 HU, cancellous/diploë 300–700 HU). The FDG uptake of each tissue is a
range: every patient draws its own value from it, so the organ ratios vary between patients as they
do between scans. The ranges follow normal-organ FDG uptake as reported for adults at ~60 min
after injection:

- Wahl RL, Jacene H, Kasamon Y, Lodge MA. From RECIST to PERCIST. J Nucl Med 2009;50 Suppl 1:
  122S–150S (liver SUVmean ≈ 2–2.5 and mediastinal blood pool ≈ 1.5–2 as reference regions);
- Zincirkeser S, Şahin E, Halac M, Sager S. Standardized uptake values of normal organs on
  18F-fluorodeoxyglucose PET and CT imaging. J Int Med Res 2007;35:231–236 (muscle, spleen,
  kidney, myocardium, brain, bone marrow);
- Ramos CD et al. FDG-PET standardized uptake values in normal anatomical structures. Nucl Med
  Commun 2001;22:727–733 (lung, fat, muscle).

Bladder urine (10–30) and lesions (4–15 per lesion) are wide on purpose: excreted FDG and tumour
avidity vary most. The MR values are a T1-weighted spin-echo contrast (fat and marrow bright,
white over grey matter, CSF and cortical bone dark, flowing blood a signal void).
"""

from __future__ import annotations

import numpy as np

(AIR, SOFT_TISSUE, FAT, BONE, CSF, GREY_MATTER, WHITE_MATTER, LESION, CANCELLOUS_BONE, LUNG, MUSCLE, BLOOD,
 MYOCARDIUM, LIVER, SPLEEN, KIDNEY, URINE, EYE) = range(18)
TISSUES = ("air", "soft_tissue", "fat", "bone", "csf", "grey_matter", "white_matter", "lesion", "cancellous_bone",
           "lung", "muscle", "blood", "myocardium", "liver", "spleen", "kidney", "urine", "eye")
CORTICAL_BONE = BONE

# Unenhanced CT numbers (HU); bone: see CORTICAL_HU / CANCELLOUS_HU.
CT_HU = {
    AIR: -1000.0, SOFT_TISSUE: 40.0, FAT: -100.0, BONE: 1450.0, CSF: 8.0, GREY_MATTER: 38.0, WHITE_MATTER: 28.0,
    LESION: 50.0, CANCELLOUS_BONE: 500.0, LUNG: -850.0, MUSCLE: 50.0, BLOOD: 42.0, MYOCARDIUM: 45.0, LIVER: 58.0,
    SPLEEN: 47.0, KIDNEY: 32.0, URINE: 6.0, EYE: 12.0,
}
CORTICAL_HU = (1020.0, 1880.0)  # density 0 → 1, kept inside 1000–1900 HU with the CT noise
CANCELLOUS_HU = (320.0, 680.0)  # inside 300–700 HU

# FDG uptake ranges (SUV, g/ml), one draw per patient and tissue.
SUV_RANGES = {
    AIR: (0.0, 0.0), SOFT_TISSUE: (0.8, 1.4), FAT: (0.3, 0.5), BONE: (0.4, 0.6), CSF: (0.2, 0.4),
    GREY_MATTER: (6.0, 8.0), WHITE_MATTER: (2.2, 3.0), LESION: (4.0, 15.0), CANCELLOUS_BONE: (1.4, 2.0),
    LUNG: (0.3, 0.5), MUSCLE: (0.7, 1.0), BLOOD: (1.5, 2.0), MYOCARDIUM: (2.0, 8.0), LIVER: (2.0, 2.5),
    SPLEEN: (1.6, 2.0), KIDNEY: (3.0, 5.0), URINE: (10.0, 30.0), EYE: (0.4, 0.8),
}
# T1-weighted spin echo (a.u.).
MR_T1 = {
    AIR: 0.0, SOFT_TISSUE: 600.0, FAT: 1000.0, BONE: 60.0, CSF: 200.0, GREY_MATTER: 550.0, WHITE_MATTER: 800.0,
    LESION: 350.0, CANCELLOUS_BONE: 750.0, LUNG: 30.0, MUSCLE: 450.0, BLOOD: 80.0, MYOCARDIUM: 480.0, LIVER: 620.0,
    SPLEEN: 500.0, KIDNEY: 520.0, URINE: 180.0, EYE: 220.0,
}

BQML_PER_SUV = 300e6 / 75e3  # 300 MBq injected into 75 kg: 4000 Bq/ml per SUV


def lookup(labels: np.ndarray, table: dict[int, float]) -> np.ndarray:
    """`table[label]` at every voxel (float64)."""
    values = np.zeros(len(TISSUES))
    for label, value in table.items():
        values[label] = value
    return values[labels]


def draw_uptake(rng: np.random.Generator) -> dict[int, float]:
    """One patient's SUV per tissue, uniform in each tissue's range."""
    return {label: float(rng.uniform(low, high)) for label, (low, high) in SUV_RANGES.items()}


def mean_uptake() -> dict[int, float]:
    """The middle of each tissue's SUV range."""
    return {label: (low + high) / 2.0 for label, (low, high) in SUV_RANGES.items()}


def ct_from_labels(labels: np.ndarray, bone_density: np.ndarray, rng: np.random.Generator, noise_hu: float = 4.0) -> np.ndarray:
    """CT numbers (HU, float32): tissue values; cortical and cancellous bone from `bone_density` in
    [0, 1]; quantum noise truncated at ±2.5 σ so every tissue keeps its textbook range."""
    hu = lookup(labels, CT_HU)
    for label, (low, high) in ((BONE, CORTICAL_HU), (CANCELLOUS_BONE, CANCELLOUS_HU)):
        bone = labels == label
        hu[bone] = low + (high - low) * np.clip(bone_density[bone], 0.0, 1.0)
    hu += np.clip(rng.normal(0.0, noise_hu, size=hu.shape), -2.5 * noise_hu, 2.5 * noise_hu)
    return np.clip(hu, -1024.0, 3071.0).astype(np.float32)


def mr_from_labels(labels: np.ndarray) -> np.ndarray:
    """Noise-free T1 spin-echo magnitude (a.u.)."""
    return lookup(labels, MR_T1)


def suv_from_labels(labels: np.ndarray, uptake: dict[int, float] | None = None,
                    lesion_index: np.ndarray | None = None, lesion_suv: tuple[float, ...] = ()) -> np.ndarray:
    """FDG SUV per voxel: each tissue's uptake (default: the middle of its range); lesion k
    (`lesion_index == k + 1`) takes `lesion_suv[k]`."""
    suv = lookup(labels, uptake or mean_uptake())
    if lesion_index is not None:
        for k, value in enumerate(lesion_suv):
            suv[lesion_index == k + 1] = value
    return suv

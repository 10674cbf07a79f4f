"""The task registry: every translation task medgan-tf knows, one record each, and tasks of your own.

A `Task` is a source modality (and extra source modalities) translated to a target modality on a
grid (voxel spacing, slice size) with a normalization of each side — all held in its
`config.DataConfig` — plus what follows from them: the default evaluation protocol (the target
modality's, unless the task names one) and the classical baselines (the same modality on both
sides: the denoising filters; different modalities: a fitted intensity map), and optionally the
built-in phantom that makes synthetic data for it (`medgan_tf.data.synthetic.GENERATORS`).

Built in: the paper's three tasks with its settings (arXiv 1806.06397 §3.1), and three that
users of the field translate most (numbers cited in each record). A task of your own needs no
code: a TOML file (`task_from_toml`, keys in `TOML_KEYS`) given wherever `--task` is taken. The
resolved task travels with the data: the converter's manifest, the run directory and the export
hold its name and its `DataConfig`, and `from_experiment` rebuilds it from them.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any, Mapping

from medgan_tf import modalities
from medgan_tf.config import CHOICES, DataConfig, NormalizationConfig
from medgan_tf.errors import UserError
from medgan_tf.registry import Registry

NAME_PATTERN = r"[a-z][a-z0-9_]{0,47}"


@dataclasses.dataclass(frozen=True)
class Task:
    """One translation task.

    name:        registry key and `--task NAME`; names run directories and exports.
    data:        modalities, grid, normalizations (and the evaluation protocol when the task
                 names one): what the converter, the networks and translation use.
    description: one line for `medgan-tf tasks`.
    reference:   where its numbers come from.
    phantom:     the built-in synthetic data generator for it (a key of
                 `medgan_tf.data.synthetic.GENERATORS`), or None.
    demo:        what `medgan-tf demo` trains for it: overrides of the fields of
                 `medgan_tf.workflows.demo.DemoPreset` (model, image size, model-grid spacing,
                 steps, ...), chosen so that the demo beats the untouched input and the task's
                 classical baselines in minutes on two CPU cores; empty: the preset as it is.
    """

    name: str
    data: DataConfig
    description: str = ""
    reference: str = ""
    phantom: str | None = None
    demo: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)

    @property
    def source(self) -> modalities.Modality:
        return modalities.get(self.data.source_modality)

    @property
    def target(self) -> modalities.Modality:
        return modalities.get(self.data.target_modality)

    @property
    def protocol(self) -> str:
        """The evaluation protocol of `evaluate --pairs` without `--protocol`."""
        return self.data.protocol or self.target.protocol

    @property
    def denoising(self) -> bool:
        """Source and target are one modality: the classical baselines are denoising filters."""
        return self.data.source_modality == self.data.target_modality

    @property
    def same_unit(self) -> bool:
        """Source and target share a unit: the untouched input is a row of every evaluation."""
        return self.source.unit == self.target.unit


TASKS: Registry[Task] = Registry("task")


def normalization(modality: str, **changes: Any) -> NormalizationConfig:
    """The default normalization of `modality` (`modalities.MODALITIES`), with `changes`."""
    return dataclasses.replace(NormalizationConfig(**modalities.get(modality).normalization), **changes)


def make(name: str, source: str, target: str, spacing_mm, image_size: int = 256, *,
         source_normalization: NormalizationConfig | None = None,
         target_normalization: NormalizationConfig | None = None,
         extra_sources: tuple[str, ...] = (), protocol: str = "", description: str = "", reference: str = "",
         phantom: str | None = None, demo: Mapping[str, Any] | None = None) -> Task:
    """A checked `Task`: the modalities' default normalizations unless given; a same-modality
    target shares the source's normalization parameters (one physical scale for both sides)."""
    check_name(name)
    for role, key in (("source", source), ("target", target), *(("extra_sources", k) for k in extra_sources)):
        if key not in modalities.MODALITIES:
            raise UserError(f"task {name!r}: {role} {key!r} is not a modality; expected one of "
                            f"{', '.join(modalities.MODALITIES.names())}")
    if target_normalization is None:
        target_normalization = normalization(target, share_source=source == target)
    data = DataConfig(
        source_modality=source, target_modality=target, image_size=int(image_size),
        spacing_mm=tuple(float(v) for v in spacing_mm),
        source_normalization=source_normalization or normalization(source),
        target_normalization=target_normalization,
        extra_source_modalities=tuple(extra_sources), protocol=protocol)
    return Task(name, data, " ".join(description.split()), " ".join(reference.split()), phantom, dict(demo or {}))


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise UserError(f"task name {name!r}: expected lower-case letters, digits and _ (starting with a letter, "
                        "at most 48), e.g. my_mr_ct")
    return name


def get(spec: str | Path | Task) -> Task:
    """The task `spec` names: a registered name, or a TOML file (`task_from_toml`)."""
    if isinstance(spec, Task):
        return spec
    text = str(spec)
    if text.endswith(".toml") or (text not in TASKS and Path(text).is_file()):
        return task_from_toml(text)
    if text not in TASKS:
        raise UserError(f"unknown task {text!r}; expected one of {', '.join(TASKS.names())}, or a TOML file of your "
                        "own (`medgan-tf tasks --show NAME` prints one to start from)")
    return TASKS.get(text)


def with_builtin_data() -> list[str]:
    """Names of the registered tasks that have a phantom (built-in synthetic data)."""
    return [name for name, task in TASKS.items() if task.phantom]


def flag_help(default: str | None = None, phantom_only: bool = False, what: str = "the task") -> str:
    """The help text of a `--task` flag: the registered names (those with built-in data when
    `phantom_only`) or a TOML file, and the default."""
    names = with_builtin_data() if phantom_only else TASKS.names()
    text = f"{what}: one of {', '.join(names)} (`medgan-tf tasks`)"
    text += "" if phantom_only else ", or a TOML file of your own (`medgan-tf tasks --show NAME` prints one)"
    return text + (f"; default {default}" if default else "")


def from_experiment(name: str, data: DataConfig) -> Task:
    """The task a run, export or converted dataset was made for, from the name and the
    `DataConfig` it carries (which may differ from the registered task's: `--spacing`, a TOML task)."""
    registered = TASKS.get(name) if name in TASKS else None
    if registered is not None:
        return dataclasses.replace(registered, data=data)
    return Task(name, data, "a task of its own (its definition travelled with the data)")


# --------------------------------------------------------------------------- TOML

TOML_KEYS = {
    "name": "the task's name (lower-case letters, digits, _): names runs and exports",
    "source": "the source modality",
    "target": "the target modality",
    "spacing_mm": "model-grid voxel size [x, y, z] in mm",
    "image_size": "slice size S (S×S pixels; the networks need a power of two ≥ 8)",
    "extra_sources": "optional: modalities of extra source volumes (pairs CSV columns source_2, …)",
    "protocol": "optional: the evaluation protocol of `evaluate --pairs` (default: the target modality's)",
    "description": "optional: one line for `medgan-tf tasks`",
    "reference": "optional: where the numbers come from",
    "source_normalization": "optional table: overrides of the source's normalization",
    "target_normalization": "optional table: overrides of the target's normalization",
}
NORMALIZATION_KEYS = tuple(f.name for f in dataclasses.fields(NormalizationConfig))


def task_from_toml(path: str | Path) -> Task:
    """The task a TOML file declares; a UserError naming the file, the key and what is allowed."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"task file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UserError(f"task file {path}: not a readable TOML file ({error})") from None
    try:
        return task_from_dict(values)
    except UserError as error:
        raise UserError(f"task file {path}: {error}") from None


def task_from_dict(values: Mapping[str, Any]) -> Task:
    unknown = sorted(set(values) - set(TOML_KEYS))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(unknown)}; expected some of {', '.join(TOML_KEYS)}")
    missing = [key for key in ("name", "source", "target", "spacing_mm", "image_size") if key not in values]
    if missing:
        raise UserError(f"missing key(s) {', '.join(missing)}")
    spacing = values["spacing_mm"]
    if (not isinstance(spacing, list) or len(spacing) != 3
            or not all(isinstance(v, (int, float)) and 0 < v < 1e3 for v in spacing)):
        raise UserError(f"spacing_mm: expected three positive sizes in mm, e.g. [1.0, 1.0, 2.5]; received {spacing!r}")
    size = values["image_size"]
    if not isinstance(size, int) or size < 8:
        raise UserError(f"image_size: expected an integer ≥ 8 (a power of two to train); received {size!r}")
    extra = values.get("extra_sources", [])
    if not isinstance(extra, list):
        raise UserError(f"extra_sources: expected a list of modalities, e.g. [\"MR\"]; received {extra!r}")
    protocol = values.get("protocol", "")
    if not isinstance(protocol, str):
        raise UserError(f"protocol: expected a protocol name; received {protocol!r}")
    source, target = str(values["source"]), str(values["target"])
    if target in modalities.MODALITIES and protocol == modalities.get(target).protocol:
        protocol = ""  # the target modality's own: follows the table
    sides = {}
    for side, modality in (("source", source), ("target", target)):
        key = f"{side}_normalization"
        overrides = values.get(key, {})
        if not isinstance(overrides, Mapping) or set(overrides) - set(NORMALIZATION_KEYS):
            raise UserError(f"{key}: expected a table with some of {', '.join(NORMALIZATION_KEYS)}; "
                            f"received {dict(overrides) if isinstance(overrides, Mapping) else overrides!r}")
        if modality in modalities.MODALITIES and overrides:
            base = normalization(modality, share_source=side == "target" and source == target)
            sides[key] = _checked_normalization(key, dataclasses.replace(base, **overrides), modality)
    task = make(values["name"], source, target, spacing, size, extra_sources=tuple(map(str, extra)), protocol=protocol,
                description=str(values.get("description", "")), reference=str(values.get("reference", "")), **sides)
    norm = task.data.target_normalization
    if norm.kind != "window" and not norm.share_source:
        # A window fitted on each target volume: translation has no target to fit it on (`translate` would refuse).
        raise UserError(f"target_normalization: kind {norm.kind!r} is fitted on each target volume, which a model "
                        f"output does not have; expected kind = \"window\" with low and high in {task.target.unit}, "
                        "or share_source = true (the output takes the source volume's window: same-modality tasks)")
    return task


def _checked_normalization(key: str, norm: NormalizationConfig, modality: str) -> NormalizationConfig:
    kinds = CHOICES["data.source_normalization.kind"]
    if norm.kind not in kinds:
        raise UserError(f"{key}.kind: expected one of {', '.join(kinds)}; received {norm.kind!r}")
    expected = modalities.get(modality)
    if (norm.unit == "HU") != expected.hounsfield:
        # A table left from another modality (`tasks --show mr_ct` edited to an MR target keeps CT's HU window).
        default = ", ".join(f"{k} = {_toml_value(v)}" for k, v in expected.normalization.items())
        raise UserError(f"{key}.unit: {norm.unit!r} does not fit {modality} (values in {expected.unit}); edit the "
                        f"table for {modality}, or delete it to take {modality}'s default ({default})")
    if norm.kind == "window" and not float(norm.high) > float(norm.low):
        raise UserError(f"{key}: expected high > low; received low {norm.low}, high {norm.high}")
    return norm


def task_to_toml(task: Task) -> str:
    """A complete TOML declaration of `task` (every key, normalizations spelled out), which
    `task_from_toml` reads back to the same task."""
    data = task.data
    lines = [f"# medgan-tf task: {task.description or task.name}"]
    if task.reference:
        lines.append(f"# numbers from: {task.reference}")
    top = {"name": task.name, "description": task.description, "source": data.source_modality,
           "target": data.target_modality, "extra_sources": list(data.extra_source_modalities),
           "spacing_mm": [float(v) for v in data.spacing_mm], "image_size": data.image_size,
           "protocol": task.protocol, "reference": task.reference}
    lines += [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for side in ("source_normalization", "target_normalization"):
        norm = dataclasses.asdict(getattr(data, side))
        lines += ["", f"[{side}]", *(f"{key} = {_toml_value(value)}" for key, value in norm.items())]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- the built-in tasks

DEFAULT_TASK = "pet_denoise"  # the demo's and `train`'s default: the paper's task a short run learns best
REFERENCE_TASK = "pet_ct"  # the paper's first task: the benchmark's CasNet-6 at 256²
REGISTRATION_TASK = "mr_ct"  # `bench`'s registration figures: MR against CT of one head, moved on purpose

# The paper's three (arXiv 1806.06397 §3.1), with its settings.
TASKS.add("pet_ct", make(
    "pet_ct", "PT", "CT", (1.0, 1.0, 1.0), 256, phantom="pet_ct",
    description="PET → CT (attenuation correction without CT; the paper's task 1)",
    reference="MedGAN §3.1: PET 2×2×3 mm and CT 0.85×0.85×5 mm, both resampled to 1 mm isotropic, 256² slices"))
TASKS.add("mr_motion", make(
    "mr_motion", "MR", "MR", (1.0, 1.0, 1.0), 256, phantom="mr_motion",
    description="motion-corrupted MR → motion-free MR (T1 spin echo of the head; the paper's task 2)",
    reference="MedGAN §3.1: T1 SE at 1 mm isotropic, 256² slices"))
TASKS.add("pet_denoise", make(
    "pet_denoise", "PT", "PT", (2.8, 2.8, 2.0), 256, phantom="pet_denoise",
    demo={"context_slices": 1},  # the phantom's own 64² × 2.8 mm grid; 2.5D with one neighbour per side
    description="25 %-time PET → full-time PET (denoising; the paper's task 3)",
    reference="MedGAN §3.1: the scanner's native 2.8×2.8×2 mm voxels"))

# SynthRAD2023 (Thummerer et al., "SynthRAD2023 Grand Challenge dataset", Med. Phys. 50(7), 2023):
# brain pairs resampled to 1×1×1 mm, pelvis pairs to 1×1×2.5 mm; the challenge scores CT in
# [−1024, 3000] HU (github.com/SynthRAD2023/metrics image_metrics.py), the CT window used here.
SYNTHRAD_CT = normalization("CT", low=-1024.0, high=3000.0)
TASKS.add("mr_ct", make(
    "mr_ct", "MR", "CT", (1.0, 1.0, 1.0), 256, target_normalization=SYNTHRAD_CT, phantom="mr_ct",
    demo={"spacing_mm": (4.0, 4.0, 3.0)},  # 64² × 4 mm: the phantom's 256 mm head; its 3 mm slices
    description="MR → synthetic CT (MR-only radiotherapy planning; SynthRAD Task 1, brain)",
    reference="SynthRAD2023 dataset (Thummerer et al., Med. Phys. 2023): brain at 1×1×1 mm; CT scored in "
              "[−1024, 3000] HU (SynthRAD2023 image_metrics.py)"))
TASKS.add("cbct_ct", make(
    "cbct_ct", "CBCT", "CT", (1.0, 1.0, 2.5), 512,
    source_normalization=normalization("CBCT", low=-1024.0, high=3000.0), target_normalization=SYNTHRAD_CT,
    phantom="cbct_ct", demo={"spacing_mm": (6.25, 6.25, 3.0), "steps": 500},  # 64² × 6.25 mm: the phantom's 400 mm pelvis
    description="cone-beam CT → CT (adaptive radiotherapy; SynthRAD Task 2, pelvis)",
    reference="SynthRAD2023 dataset (Thummerer et al., Med. Phys. 2023): pelvis at 1×1×2.5 mm (512² covers a "
              "pelvis); CT scored in [−1024, 3000] HU (SynthRAD2023 image_metrics.py)"))
# AAPM/Mayo Low Dose CT Grand Challenge (McCollough et al., Med. Phys. 44(10), e339, 2017):
# quarter-dose vs full-dose abdominal CT, 512² slices of about 0.7–0.8 mm, 3 mm thick; the
# window −1024…3072 HU is the 12-bit CT range the denoising literature normalizes (RED-CNN,
# Chen et al., IEEE TMI 36(12), 2017).
TASKS.add("ct_denoise", make(
    "ct_denoise", "CT", "CT", (0.75, 0.75, 3.0), 512,
    source_normalization=normalization("CT", low=-1024.0, high=3072.0),
    target_normalization=normalization("CT", low=-1024.0, high=3072.0, share_source=True), phantom="ct_denoise",
    # 64² × 6 mm: the task's 384 mm field of view; the phantom's 3 mm slices. The phantom is imaged
    # on the model's own 64² grid (`pixels`), so the model sees the noise the scored volume holds
    # (imaged finer and resampled, the input keeps detail a 6-mm model cannot return). A 6-mm pixel
    # averages about 64 of the challenge's 0.75-mm pixels, so at a routine dose the quarter-dose
    # input differs from the full dose by only about 11 HU (PSNR 57 dB in the 4096-HU window): too
    # little noise to learn from in a few hundred iterations. With 15× fewer photons (2·10⁴ per
    # bin) the demo's input differs from its target by about 40 HU, as a full-resolution
    # quarter-dose slice does (about 45 dB); the model corrects its input (residual U-block).
    # Validated every 50 iterations: in some runs its validation PSNR peaks before the last.
    demo={"spacing_mm": (6.0, 6.0, 3.0), "residual": True, "validate_every_steps": 50,
          "phantom_options": {"full_dose_photons": 2.0e4, "pixels": 64}},
    description="quarter-dose CT → full-dose CT (low-dose CT denoising; AAPM/Mayo Grand Challenge)",
    reference="AAPM/Mayo Low Dose CT Grand Challenge (McCollough et al., Med. Phys. 2017): 512² slices of "
              "about 0.75 mm, 3 mm thick; window −1024…3072 HU as in RED-CNN (Chen et al., IEEE TMI 2017)"))

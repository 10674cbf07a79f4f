"""The conversion's options, without importing Apache Beam (so that `medgan-tf --help` stays
instant): `ConvertOptions`, what the library call `pipelines.convert.convert` takes, and the
command-line flags that fill it, shared by `python -m pipelines.convert` and `medgan-tf convert`."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from medgan_tf import tasks
from medgan_tf.data.registration import METHODS, RegistrationSettings
from medgan_tf.errors import UserError

_REGISTRATION = RegistrationSettings()  # the defaults of --max-rotation, --max-translation


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """One conversion: every option of `python -m pipelines.convert`, with its defaults (None:
    the task preset's value). Field names are the flags' (`image_size` is --image-size).

    pairs: the pairs CSV (local path or a URL Beam reads); task: a registered task's name or a
    task TOML file (`medgan_tf.tasks`);
    out: output folder (local or a URL Beam writes); image_size: slice side in pixels;
    spacing: model-grid voxel size (x, y, z) in mm; val_fraction, test_fraction: shares of the
    hash-split patients in [0, 1); strict: any rejected pair fails the run; salt: pseudonym
    secret (None: $MEDGAN_TF_SALT or the per-user secret file); overwrite: replace a non-empty
    `out`; num_shards: train shards (val and test get half); runner: Beam runner name;
    num_workers: DirectRunner worker processes; context_slices: 2.5D neighbours stored per side;
    extra_source_modalities: "M2,M3,…" for the CSV's source_2, source_3, … columns;
    allow_different_patients: accept DICOM pairs whose headers name different patients;
    register: "none" (world coordinates), "rigid", "affine" or "deformable" registration of each
    target to its source; max_rotation (degrees), max_translation (mm), min_similarity (None: the
    metric's floor): beyond them a registered pair is rejected (`medgan_tf.data.registration`);
    preview: a picture per pair in `out`/previews/ (`pipelines.previews`).
    """

    pairs: str
    task: str
    out: str
    image_size: int | None = None
    spacing: tuple[float, float, float] | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    strict: bool = False
    salt: str | None = None
    overwrite: bool = False
    num_shards: int | None = None
    runner: str = "DirectRunner"
    num_workers: int | None = None
    context_slices: int = 0
    extra_source_modalities: str | None = None
    allow_different_patients: bool = False
    register: str = "none"
    max_rotation: float = _REGISTRATION.max_rotation_deg
    max_translation: float = _REGISTRATION.max_translation_mm
    min_similarity: float | None = None
    preview: bool = False

    def resolved_task(self) -> tasks.Task:
        """The task `task` names (a registered one, or the one its TOML file declares)."""
        return tasks.get(self.task)

    def registration(self) -> RegistrationSettings:
        """How each pair's target is registered to its source (`--register` and its limits)."""
        return RegistrationSettings(method=self.register, max_rotation_deg=float(self.max_rotation),
                                    max_translation_mm=float(self.max_translation), min_similarity=self.min_similarity)

    def __post_init__(self) -> None:
        # Paths may be given as pathlib.Path; the converter and Beam's FileSystems take strings.
        object.__setattr__(self, "pairs", os.fspath(self.pairs))
        object.__setattr__(self, "out", os.fspath(self.out))
        object.__setattr__(self, "task", os.fspath(self.task))
        self.resolved_task()  # a UserError naming the registered tasks, or the task file's bad key
        self.registration()  # a UserError for a method or limit that cannot be
        if self.spacing is not None:
            spacing = tuple(float(value) for value in self.spacing)
            if len(spacing) != 3 or not all(0 < value < 1e3 for value in spacing):
                raise UserError(f"--spacing: expected three positive sizes in mm, e.g. (1, 1, 2.5); received {self.spacing!r}")
            object.__setattr__(self, "spacing", spacing)
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value < 1):
                raise UserError(f"--{name.replace('_', '-')}: expected a fraction in [0, 1); received {value!r}")


def options_from_namespace(args: argparse.Namespace) -> ConvertOptions:
    """The `ConvertOptions` of parsed `add_arguments` flags (other attributes are ignored)."""
    return ConvertOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ConvertOptions)})


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The converter's own options (shared by `python -m pipelines.convert` and `medgan-tf convert`)."""
    parser.add_argument("--pairs", required=True, help="CSV with header patient_id,source,target[,split][,mask] (NIfTI file or DICOM "
                        "folder paths, local or on any scheme Beam reads, e.g. gs://; relative paths are relative to the CSV). "
                        "split: train|val|test (any case; blank = hash split) for that patient; mask: a mask volume on the "
                        "source's frame, carried into the records")
    parser.add_argument("--task", required=True, metavar="NAME|FILE.toml",
                        help=f"the task: modalities, grid, normalizations; one of {', '.join(tasks.TASKS.names())} "
                        "(`medgan-tf tasks`), or a TOML file of your own")
    parser.add_argument("--out", required=True, help="output directory (train/, val/, test/, manifest.json); local, or on any "
                        "scheme Beam writes (gs://, s3://, ...), where manifest.json written last marks it complete")
    parser.add_argument("--image-size", type=int, default=None, help="slice size S of the records (default: the task preset's, 256)")
    parser.add_argument("--spacing", type=spacing_mm, default=None, metavar="X,Y,Z",
                        help="model-grid voxel size in mm (default: the task preset's); stored in the manifest, and "
                        "training, export and translate follow it")
    parser.add_argument("--val-fraction", type=fraction, default=None, metavar="F",
                        help="share of the patients (not named in the CSV's split column) hashed into val (default: the "
                        "task preset's, 0.2; at least one patient when F > 0 and there are ≥ 2)")
    parser.add_argument("--test-fraction", type=fraction, default=None, metavar="F",
                        help="share hashed into the held-out test split (default 0; at least one patient when F > 0 and "
                        "there are ≥ 3); train always keeps one")
    parser.add_argument("--strict", action="store_true", help="fail (exit 1, no output) if any pair is rejected")
    parser.add_argument("--allow-different-patients", action="store_true",
                        help="accept a DICOM pair whose source and target name different patients (PatientID, or "
                             "name and birth date); by default such a pair is rejected")
    parser.add_argument("--salt", default=None, help="secret for the patient pseudonyms (default: $MEDGAN_TF_SALT or a per-user secret file)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument("--num-shards", type=int, default=None, help="train shards (val and test get half; default from the task preset)")
    parser.add_argument("--runner", default="DirectRunner", help="Beam runner (DirectRunner, DataflowRunner, FlinkRunner, PortableRunner: with --job_endpoint=embed --environment_type=LOOPBACK it runs here, no Java needed, ...)")
    parser.add_argument("--num-workers", type=int, default=None, help="DirectRunner: N local worker processes (multi_processing)")
    parser.add_argument("--context-slices", type=int, default=0, metavar="K",
                        help="2.5D: store with every slice its K neighbours on each side (edge slices repeat), so a "
                        "model can be trained on any K' ≤ K (train --context-slices); default 0, the paper's 2D slices")
    parser.add_argument("--extra-source-modalities", default=None, metavar="M2,M3,...",
                        help="modality (CT, PT or MR) of each extra source column source_2, source_3, … of the pairs "
                        "CSV; picks its normalization; default: the task's source modality for each")
    add_registration_arguments(parser)
    parser.add_argument("--preview", action="store_true",
                        help="one picture per pair, DIR/previews/<patient pseudonym>-line<N>.png (N: its line of the "
                        "pairs CSV): checkerboards of source and target on the model grid (middle axial slice and "
                        "coronal plane), before and after --register, titled with the rotation, translation and "
                        "similarity before → after it found (without --register: one column, as converted); a rejected "
                        "pair gets one too, with the reason. Published with the dataset (nothing when nothing is)")
    return parser


def add_registration_arguments(parser: argparse.ArgumentParser, what: str = "convert") -> argparse.ArgumentParser:
    """--register and its limits (shared by `convert` and `evaluate --pairs`)."""
    parser.add_argument("--register", default="none", choices=METHODS,
                        help="register each target to its source before " + ("the slices are made" if what == "convert" else "scoring")
                        + ": none (default: world coordinates as the headers say), rigid (rotation + translation), affine "
                        "(+ scaling and shear) or deformable (+ a coarse B-spline); correlation within one modality, "
                        "mutual information across; see README \"Pairs that are not aligned\"")
    parser.add_argument("--max-rotation", type=float, default=_REGISTRATION.max_rotation_deg, metavar="DEG",
                        help=f"with --register: reject a pair rotated more than DEG degrees (default {_REGISTRATION.max_rotation_deg:g})")
    parser.add_argument("--max-translation", type=float, default=_REGISTRATION.max_translation_mm, metavar="MM",
                        help=f"with --register: reject a pair moved more than MM mm at the source's centre "
                        f"(default {_REGISTRATION.max_translation_mm:g})")
    parser.add_argument("--min-similarity", type=float, default=None, metavar="S",
                        help="with --register: reject a pair whose similarity after registration is below S (default: "
                        "0.8 correlation, 0.3 normalized mutual information; both smoothed by one voxel)")
    return parser


def spacing_mm(text: str) -> tuple[float, float, float]:
    """"X,Y,Z" → three positive finite floats (mm); argparse shows the error."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 < value < 1e3 for value in values):
        raise argparse.ArgumentTypeError(f"expected three positive sizes in mm, e.g. 1,1,2.5; received {text!r}")
    return values  # type: ignore[return-value]


def fraction(text: str) -> float:
    """A share in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), e.g. 0.1; received {text!r}")
    return value

"""Configuration: nested frozen dataclasses with the paper's values as defaults.

Every number of MedGAN (arXiv 1806.06397, §2.5 and Algorithm 1) lives here once:
λ1 = 20, λ2 = λ3 = 1e-4, N_G = 3, Adam(2e-4, β1 = 0.5), batch size 1, 200 epochs, CasNet of
6 U-blocks at 256², instance normalization. The named task presets and model recipes that combine
these values live in `medgan_tf.presets`; `validate` checks a config in one place.

The resolved `ExperimentConfig` is written as JSON into every run directory and every export
(`to_dict` / `from_dict`), and `diff` names the fields that differ between two configs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from medgan_tf import modalities
from medgan_tf.errors import UserError

# Generator loss terms of every recipe, in the order they are reported (paper eq. 12 and the
# baselines of §3.2). `LossConfig` has one weight field per name.
LOSS_TERMS = ("cgan", "perceptual", "style", "content", "l1", "l2", "total_variation", "feature_matching")


@dataclass(frozen=True)
class GeneratorConfig:
    """CasNet generator: `num_ublocks` pix2pix `unet_256` U-blocks chained end to end.

    Encoder widths are `min(base_filters * 2**k, max_filters)`; the number of down-sampling
    convs is log2(image_size) (8 at 256², bottleneck 1×1), as in pix2pix.
    """

    num_ublocks: int = 6
    base_filters: int = 64
    max_filters: int = 512
    normalization: str = "instance"  # "instance" | "batch"
    channels: int = 1
    # False: the paper's U-block, whose tanh output is the image. True: each U-block adds a
    # correction to the centre slice of its input, out = centre + tanh(conv), the last conv
    # zero-initialized so the untrained block is the identity (residual learning for denoising,
    # as in RED-CNN, Chen et al. IEEE TMI 2017): where source and target differ by noise that is
    # small against the window, the model starts at the input instead of at a random image.
    residual: bool = False


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Conditional 16×16 PatchGAN with spectral normalization (paper §2.4.3)."""

    filters: tuple[int, ...] = (64, 128)
    normalization: str = "instance"  # "instance" | "batch" | "none"
    spectral_power_iterations: int = 1


@dataclass(frozen=True)
class LossConfig:
    """Weights of every generator loss term; a weight of 0 switches the term off.

    MedGAN eq. 12: L = L_cGAN + λ1·L_perceptual + λ2·L_style + λ3·L_content.
    The baselines of paper §3.2 add L1, L2, total variation and PAN's terms.
    """

    cgan: float = 1.0
    perceptual: float = 20.0  # λ1
    style: float = 1e-4  # λ2
    content: float = 1e-4  # λ3
    l1: float = 0.0
    l2: float = 0.0
    total_variation: float = 0.0
    feature_matching: float = 0.0  # PAN: discriminator features without the i=0 pixel term
    # λ_pi of eq. 7 for [raw pair (i=0), hidden 1, hidden 2]: equal influence (paper §2.5).
    perceptual_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    # First conv of VGG-19 blocks 1 and 5 for style, blocks 1-4 for content (paper §2.5).
    style_layers: tuple[str, ...] = ("block1_conv1", "block5_conv1")
    content_layers: tuple[str, ...] = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1")
    style_reference: str = "target"  # "target" (MedGAN) | "source" (Fila-sGAN, paper §3.2.2)
    discriminator_loss: str = "cgan"  # "cgan" | "pan_margin"
    pan_margin: float = 1.0  # m of PAN's positive-margin discriminator loss

    def active_terms(self) -> dict[str, float]:
        """The generator loss terms of this recipe that have a non-zero weight, by name."""
        return {name: getattr(self, name) for name in LOSS_TERMS if getattr(self, name) != 0.0}


@dataclass(frozen=True)
class NormalizationConfig:
    """How one modality's physical values map to [-1, 1].

    kind:
      - "window":     fixed window [low, high] in physical units (CT in HU) → [-1, 1], clipped.
      - "scale":      per-volume scale: [0, percentile(p)] → [-1, 1] (PET in SUV or Bq/ml).
      - "percentile": per-volume window [percentile(p_low), percentile(p)] → [-1, 1] (MR).
    `share_source` means the target of a pair reuses the source's parameters, so both sides of
    a same-modality pair (PET 25% vs 100%) keep one physical scale.
    """

    kind: str = "window"
    low: float = -1000.0
    high: float = 2000.0
    percentile_low: float = 0.5
    percentile: float = 99.5
    share_source: bool = False
    unit: str = "HU"


@dataclass(frozen=True)
class DataConfig:
    """Per-task data preparation (paper §3.1). `image_size` is the one slice size of the run:
    the converter crops/pads to it and the networks are built for it."""

    source_modality: str = "PT"
    target_modality: str = "CT"
    image_size: int = 256
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    source_normalization: NormalizationConfig = field(
        default_factory=lambda: NormalizationConfig(kind="scale", percentile=99.5, unit="SUV")
    )
    target_normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    val_fraction: float = 0.2
    test_fraction: float = 0.0  # the converter's held-out test split (patients named in the CSV aside)
    augment: bool = False  # the paper uses none; `--augment` adds paired flips/shifts
    max_shift_pixels: int = 8
    shuffle_buffer: int = 512
    num_shards: int = 4
    # 2.5D and multi-channel sources (beyond the paper; 0 and () are the paper's 2D, one-source model):
    # K adjacent slices on each side of the centre slice, and the modalities of the extra source
    # volumes (pairs CSV columns source_2, source_3, …). See `medgan_tf.data.context`.
    context_slices: int = 0
    extra_source_modalities: tuple[str, ...] = ()
    # The evaluation protocol of `evaluate --pairs` without --protocol; "" = the target modality's.
    protocol: str = ""

    @property
    def source_channels(self) -> int:
        """C: source volumes per pair (the first source plus the extra ones)."""
        return 1 + len(self.extra_source_modalities)

    @property
    def input_channels(self) -> int:
        """(2K+1)·C: channels of the generator's input and of the discriminator's condition."""
        return (2 * self.context_slices + 1) * self.source_channels

    @property
    def centre_channel(self) -> int:
        """Index of the centre slice of the first source among the input channels (= K)."""
        return self.context_slices


@dataclass(frozen=True)
class TrainConfig:
    """Algorithm 1 settings plus the engineering knobs of the training driver."""

    epochs: int = 200
    steps_per_epoch: int | None = None  # None = one pass over the training split
    batch_size: int = 1
    generator_steps: int = 3  # N_G
    generator_learning_rate: float = 2e-4
    discriminator_learning_rate: float = 2e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    seed: int = 0
    xla: str = "auto"  # "auto" | "on" | "off"
    mixed_precision: str = "auto"  # "auto" | "off" | "float16" | "bfloat16"
    strategy: str = "auto"  # "auto" | "default" | "mirrored" | "multiworker"
    # "auto" = ImageNet when cached or downloadable, else random with a loud warning;
    # "imagenet" (fails when unobtainable) | path to a local .h5 | "none" (random; tests).
    vgg_weights: str = "auto"
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    image_summary_every_steps: int = 200
    validation_steps: int | None = 32
    deterministic: bool = False
    # Model selection: the validation metric the `best` checkpoint is chosen by (a validation
    # metric of `medgan_tf.metrics`), and validations without improvement before stopping (None: never).
    select_by: str = "ssim"
    patience: int | None = None
    # Steps between validations (each feeds the selection and early stopping); None: every epoch end.
    validate_every_steps: int | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one training run; written into every run and export."""

    # The task's name (`medgan_tf.tasks`); `data` holds what it resolved to. `presets.task_preset`
    # names it; a config built by hand is a task of its own until named.
    task: str = "unnamed"
    model: str = "medgan"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- (de)serialization


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from `to_dict` output; unknown keys are errors."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config fields {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        field_type = _resolved_field_types(cls)[name]
        if dataclasses.is_dataclass(field_type) and isinstance(value, Mapping):
            value = from_dict(field_type, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _resolved_field_types(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


# A block an export adds to its assets/config.json: the serving input derived from the config
# (channels of `serving_default`'s input and their order); informative, ignored when read back.
SERVING_INPUT_KEY = "serving_input"


def experiment_from_json(text: str) -> ExperimentConfig:
    values = json.loads(text)
    if isinstance(values, dict):
        values.pop(SERVING_INPUT_KEY, None)
    return from_dict(ExperimentConfig, values)


def diff(a: Any, b: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted field name → (value in a, value in b) for every leaf that differs."""
    left, right = (to_dict(a), to_dict(b)) if dataclasses.is_dataclass(a) else (a, b)
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(left) | set(right)):
        lv, rv = left.get(key), right.get(key)
        name = f"{prefix}{key}"
        if isinstance(lv, dict) and isinstance(rv, dict):
            out.update(diff(lv, rv, prefix=f"{name}."))
        elif lv != rv:
            out[name] = (lv, rv)
    return out


def override(config: Any, updates: Mapping[str, Any]) -> Any:
    """Return `config` with dotted-path fields replaced, e.g. {"train.epochs": 1}."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for path, value in updates.items():
        head, _, rest = path.partition(".")
        if head not in {f.name for f in dataclasses.fields(config)}:
            raise ValueError(f"{type(config).__name__} has no field {head!r} (from {path!r})")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = override(getattr(config, head), sub)
    return dataclasses.replace(config, **direct)


# --------------------------------------------------------------------------- validation

# The U-block halves the slice down to a 1×1 bottleneck, and the 16×16 PatchGAN needs at least one
# full patch: slices are a power of two of at least 8.
MINIMUM_IMAGE_SIZE = 8
CHOICES = {
    "generator.normalization": ("instance", "batch"),
    "discriminator.normalization": ("instance", "batch", "none"),
    "data.source_normalization.kind": ("window", "scale", "percentile"),
    "data.target_normalization.kind": ("window", "scale", "percentile"),
    "losses.discriminator_loss": ("cgan", "pan_margin"),
    "losses.style_reference": ("target", "source"),
    "train.xla": ("auto", "on", "off"),
    "train.mixed_precision": ("auto", "off", "float16", "bfloat16"),
    "train.strategy": ("auto", "default", "mirrored", "multiworker"),
}
POSITIVE = (
    "generator.num_ublocks",
    "generator.base_filters",
    "train.epochs",
    "train.batch_size",
    "train.generator_steps",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.image_summary_every_steps",
)


def check_image_size(size: int, minimum: int = MINIMUM_IMAGE_SIZE, why: str = "", power_of_two: bool = True) -> int:
    """`size` when it is a power of two (unless `power_of_two` is False: records for other tools)
    ≥ `minimum`; a UserError naming `--image-size` otherwise."""
    size = int(size)
    if size < minimum or (power_of_two and size & (size - 1)):
        kind = "a power of two" if power_of_two else "an integer"
        reason = why or ("the U-block halves it down to a 1×1 bottleneck" if power_of_two else "too small to hold a patch")
        raise UserError(f"--image-size must be {kind} ≥ {minimum} ({reason}); received {size}")
    return size


def _field(config: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """`config` unchanged when every field is usable; otherwise a UserError naming the field, the
    value received and what was expected. Every entry point (training, export, summary,
    reproduction) calls this before building anything."""
    if not isinstance(config.task, str) or not config.task:
        raise UserError(f"task must be a task's name; received {config.task!r}")
    for role in ("source_modality", "target_modality"):
        if getattr(config.data, role) not in modalities.MODALITIES:
            raise UserError(f"data.{role}: {getattr(config.data, role)!r} is not one of "
                            f"{', '.join(modalities.MODALITIES.names())}")
    check_image_size(config.data.image_size)
    for dotted, allowed in CHOICES.items():
        value = _field(config, dotted)
        if value not in allowed:
            raise UserError(f"{dotted} must be one of {', '.join(allowed)}; received {value!r}")
    for dotted in POSITIVE:
        value = _field(config, dotted)
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{dotted} must be a positive integer; received {value!r}")
    context = config.data.context_slices
    if not isinstance(context, int) or context < 0:
        raise UserError(f"data.context_slices (--context-slices) must be an integer ≥ 0; received {context!r}")
    for modality in config.data.extra_source_modalities:
        if modality not in modalities.MODALITIES:
            raise UserError(f"data.extra_source_modalities: {modality!r} is not one of "
                            f"{', '.join(modalities.MODALITIES.names())}")
    for dotted in ("train.steps_per_epoch", "train.validate_every_steps"):
        steps = _field(config, dotted)
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise UserError(f"{dotted} must be a positive integer or unset; received {steps!r}")
    return config

"""The adversarial model: `MedGAN.train_step` is Algorithm 1 of the paper (one batch).

Side-effect free by design: no images, checkpoints or logging here — the
training driver's callbacks do that with the logs `train_step` returns.

Distribution: construct and compile the model inside `strategy.scope()`. Each replica computes
per-replica batch means; the loss used for gradients is divided by `num_replicas_in_sync` because
Keras' optimizer sums the replicas' gradients, so the update equals that of the global batch
mean. Logged values are `keras.metrics.Mean` trackers (synchronized across replicas, reset by
`fit`/`evaluate` at each epoch), i.e. running means over the epoch so far.

Training mode of the discriminator: D is called with `training=True` only inside its own update
(Algorithm 1 lines 10–11) and with `training=False` everywhere else. Spectral normalization does
not depend on the flag (`models.blocks.ExplicitSpectralNormalization`): its power iteration and
kernel rescale run once per iteration, at line 12. The flag reaches D's normalization layers only.
Instance normalization (the paper's) has no state, so the flag changes nothing there; with
`discriminator.normalization="batch"`, D's update normalizes each batch by its own statistics and
updates the moving averages, while the generator updates and `test_step` use those averages, so
D — like G during D's update — is a fixed function while the other network trains (§2.1.1), and
no D variable changes during the N_G generator updates.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from medgan_tf import losses as loss_functions
from medgan_tf import metrics
from medgan_tf.config import LOSS_TERMS, LossConfig
from medgan_tf.models import renormalize_spectral_kernels
from medgan_tf.models.discriminator import FEATURES, LOGITS, PROBABILITY

# Generator loss terms are always reported under the keys of LOSS_TERMS (0 when the recipe does
# not weight them).
TRAIN_LOGS = LOSS_TERMS + ("generator_total", "discriminator_loss", "d_real", "d_fake")
# Validation adds the paper's image metrics (ssim, psnr, mse on the 0–255 scale, §3.3).
VALIDATION_METRICS = metrics.metric_names(validation=True)
TEST_LOGS = TRAIN_LOGS + VALIDATION_METRICS


class MedGAN(keras.Model):
    """MedGAN's adversarial training (paper §2.5, Algorithm 1) around networks built elsewhere.

    Args:
        generator: (B, S, S, C) → (B, S, S, C) in [-1, 1], e.g. `models.build_casnet`.
        discriminator: [candidate, source] → {"probability": (B, P, P, 1), "logits": (B, P, P, 1),
            "features": [...]}, as built by `models.build_discriminator`.
        feature_extractor: frozen image → {VGG layer name: features}, or None when the recipe
            weights neither style nor content.
        losses: the recipe's `LossConfig` — which terms, their weights, layers and references.
        generator_steps: N_G, generator updates per batch before the one discriminator update.
        source_centre: for a 2.5D / multi-source input ((2K+1)·C channels), the channel of the centre
            slice of the first source — the one-channel source image where a loss means one (the
            Fila-sGAN style reference). Unused for the paper's one-channel source.

    `call(source)` runs the generator (so `predict` translates images).
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        feature_extractor: keras.Model | None = None,
        losses: LossConfig = LossConfig(),
        generator_steps: int = 3,
        source_centre: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if generator_steps < 1:
            raise ValueError(f"generator_steps (N_G) must be ≥ 1; received {generator_steps}")
        if losses.discriminator_loss not in ("cgan", "pan_margin"):
            raise ValueError(f"losses.discriminator_loss must be 'cgan' or 'pan_margin'; received {losses.discriminator_loss!r}")
        if losses.style_reference not in ("target", "source"):
            raise ValueError(f"losses.style_reference must be 'target' or 'source'; received {losses.style_reference!r}")
        needed = (losses.style_layers if losses.style else ()) + (losses.content_layers if losses.content else ())
        if needed and feature_extractor is None:
            raise ValueError(
                f"the recipe weights style ({losses.style}) / content ({losses.content}) losses but no VGG "
                "feature extractor was given"
            )
        if feature_extractor is not None:
            provided = set(feature_extractor.output.keys()) if isinstance(feature_extractor.output, dict) else set()
            missing = sorted(set(needed) - provided)
            if missing:
                raise ValueError(f"feature extractor lacks layers {missing}; it provides {sorted(provided)}")
            feature_extractor.trainable = False
        self.generator = generator
        self.discriminator = discriminator
        self.feature_extractor = feature_extractor
        self.loss_config = losses
        self.generator_steps = int(generator_steps)
        self.source_centre = int(source_centre)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in TEST_LOGS}
        # One traced generator update called N_G times, rather than N_G inlined copies of the
        # CasNet forward/backward graph: at 256²/CasNet-6 on CPU this cut the first step from
        # 75 s to 56 s and the following ones from ~12 s to ~11 s (benchmarks/README.md).
        self._generator_update = tf.function(self._generator_update_step)
        self.generator_optimizer: keras.optimizers.Optimizer | None = None
        self.discriminator_optimizer: keras.optimizers.Optimizer | None = None
        # The networks arrive built; nothing to infer from data.
        self.built = True

    # ------------------------------------------------------------------ keras.Model API

    def call(self, source, training: bool = False):
        return self.generator(source, training=training)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def compile(
        self,
        generator_optimizer: keras.optimizers.Optimizer,
        discriminator_optimizer: keras.optimizers.Optimizer,
        jit_compile: bool = False,
        **kwargs: Any,
    ) -> None:
        """Take the two optimizers (Algorithm 1: Adam for G and for D).

        Under the `mixed_float16` global policy each is wrapped in a `LossScaleOptimizer`
        (dynamic loss scaling keeps float16 gradients from underflowing). Both are built here,
        outside any tf.function/XLA trace, so their slot variables exist before the first step.
        `jit_compile=True` compiles `train_step`/`test_step` with XLA.
        """
        super().compile(optimizer=None, jit_compile=jit_compile, **kwargs)
        mixed_float16 = keras.mixed_precision.global_policy().name == "mixed_float16"
        if mixed_float16:
            if not isinstance(generator_optimizer, keras.optimizers.LossScaleOptimizer):
                generator_optimizer = keras.optimizers.LossScaleOptimizer(generator_optimizer, name="generator_loss_scale")
            if not isinstance(discriminator_optimizer, keras.optimizers.LossScaleOptimizer):
                discriminator_optimizer = keras.optimizers.LossScaleOptimizer(
                    discriminator_optimizer, name="discriminator_loss_scale"
                )
        generator_optimizer.build(self.generator.trainable_variables)
        discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer

    # ------------------------------------------------------------------ Algorithm 1

    def train_step(self, data):
        # Plan (Algorithm 1, one pair batch (x_l, y_l) = (target, source)):
        # 1. VGG features of the fixed references (target x; source y for Fila-sGAN style), once.
        # 2. N_G times (lines 3–9): recompute G(y), D(G(y), y), D(x, y) (D in inference mode: no D
        #    variable changes) and every weighted generator loss; step the generator optimizer on
        #    their weighted sum (eq. 12).
        # 3. Line 10: G(y) with the updated generator; D (training mode) on real and fake pairs;
        #    the cGAN (or PAN margin) discriminator loss.
        # 4. Line 11: step the discriminator optimizer.
        # 5. Line 12: spectral normalization of D's kernels — the one power iteration of the step.
        # 6. Update the trackers and return every term by name.
        source, target = self._unpack(data)

        references = self._vgg_references(source, target)  # 1

        # Under a tf.distribute strategy the optimizer's cross-replica update may not sit inside a
        # nested tf.function, so the update is inlined there; elsewhere it is traced once.
        update = self._generator_update_step if tf.distribute.has_strategy() else self._generator_update
        for _ in range(self.generator_steps):  # 2
            generator_total, terms = update(source, target, references)

        fake = tf.stop_gradient(self.generator(source, training=True))  # 3
        with tf.GradientTape() as tape:
            discriminator_loss, d_real, d_fake = self._discriminator_loss(source, target, fake, training=True)
            scaled = self.discriminator_optimizer.scale_loss(self._per_replica_share(discriminator_loss))
        variables = self.discriminator.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.discriminator_optimizer.apply(gradients, variables)  # 4

        renormalize_spectral_kernels(self.discriminator)  # 5

        return self._update_trackers(  # 6
            terms,
            generator_total=generator_total,
            discriminator_loss=discriminator_loss,
            d_real=d_real,
            d_fake=d_fake,
            batch_size=tf.shape(source)[0],
        )

    def _generator_update_step(self, source, target, references):
        """One generator update (Algorithm 1 lines 4–8): (weighted total, {term: value})."""
        with tf.GradientTape() as tape:
            generator_total, terms, _ = self._generator_losses(source, target, references, training=True)
            scaled = self.generator_optimizer.scale_loss(self._per_replica_share(generator_total))
        variables = self.generator.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.generator_optimizer.apply(gradients, variables)
        return generator_total, terms

    def test_step(self, data):
        """Every loss term (no updates, networks in inference mode) plus the validation metrics of
        G(y) against x — SSIM, PSNR and MSE on the paper's 0–255 scale (§3.3), batch means of the
        per-slice values of `metrics.validation_means`, the project's one metric implementation."""
        source, target = self._unpack(data)
        references = self._vgg_references(source, target)
        generator_total, terms, fake = self._generator_losses(source, target, references, training=False)
        discriminator_loss, d_real, d_fake = self._discriminator_loss(source, target, fake, training=False)
        means = tf.numpy_function(
            metrics.validation_means, [tf.cast(fake, tf.float32), target], tf.float32, stateful=False,
            name="validation_metrics")
        means = tf.ensure_shape(means, (len(VALIDATION_METRICS),))
        return self._update_trackers(
            terms,
            generator_total=generator_total,
            discriminator_loss=discriminator_loss,
            d_real=d_real,
            d_fake=d_fake,
            **{name: means[index] for index, name in enumerate(VALIDATION_METRICS)},
            batch_size=tf.shape(source)[0],
        )

    def make_test_function(self, force=False):
        # The validation metrics run in numpy (tf.numpy_function), which XLA cannot compile: the
        # evaluation step is a plain tf.function even when `compile(jit_compile=True)`.
        jit_compile = self._jit_compile
        self._jit_compile = False
        try:
            return super().make_test_function(force)
        finally:
            self._jit_compile = jit_compile

    # ------------------------------------------------------------------ pieces

    @staticmethod
    def _unpack(data):
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            raise ValueError("MedGAN expects batches (source, target), each (B, S, S, C) in [-1, 1]")
        source, target = data[0], data[1]
        return tf.cast(source, tf.float32), tf.cast(target, tf.float32)

    @staticmethod
    def _per_replica_share(loss):
        # Keras sums gradients across replicas; dividing by their number makes the update that of
        # the global-batch mean (what keras.losses' scale_loss_for_distribution does).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / tf.cast(replicas, loss.dtype) if replicas > 1 else loss

    def _vgg(self, images) -> dict[str, tf.Tensor]:
        return {name: tf.cast(value, tf.float32) for name, value in self.feature_extractor(images, training=False).items()}

    def _vgg_references(self, source, target) -> dict[str, dict[str, tf.Tensor]]:
        """VGG features of the images the generator output is compared with; constant during the
        N_G generator steps, so computed once per batch."""
        config = self.loss_config
        references: dict[str, dict[str, tf.Tensor]] = {}
        if self.feature_extractor is None or not (config.style or config.content):
            return references
        target_features = self._vgg(target)
        if config.content:
            references["content"] = target_features
        if config.style:
            references["style"] = self._vgg(self.centre_source(source)) if config.style_reference == "source" else target_features
        return references

    def centre_source(self, source):
        """The one-channel source image y of a batch: `source` itself for the paper's input, the
        centre slice of the first source for a 2.5D / multi-source input."""
        if self.generator.input_shape[-1] == 1:
            return source
        return source[..., self.source_centre : self.source_centre + 1]

    def _generator_losses(self, source, target, references, training: bool):
        """Algorithm 1 lines 4–7 (and the baselines' terms): (weighted total, {term: value}, G(y)).

        `training` is the generator's mode; the discriminator always runs in inference mode."""
        config = self.loss_config
        zero = tf.zeros((), tf.float32)
        terms = {name: zero for name in LOSS_TERMS}

        fake = self.generator(source, training=training)
        # D is fixed while G trains: inference mode, so no D variable changes (module docstring).
        fake_output = self.discriminator([fake, source], training=False)
        if config.cgan:
            terms["cgan"] = loss_functions.cgan_generator_loss(fake_output[LOGITS])
        if config.perceptual or config.feature_matching:
            # D(x, y) is a fixed reference for the generator: no gradient flows into D here.
            real_features = [tf.stop_gradient(f) for f in self.discriminator([target, source], training=False)[FEATURES]]
            if config.perceptual:
                terms["perceptual"] = loss_functions.perceptual_loss(
                    fake_output[FEATURES], real_features, config.perceptual_layer_weights)
            if config.feature_matching:
                terms["feature_matching"] = loss_functions.feature_matching_loss(
                    fake_output[FEATURES], real_features, config.perceptual_layer_weights)
        if references:
            fake_vgg = self._vgg(fake)
            if config.style:
                terms["style"] = loss_functions.style_loss(
                    [fake_vgg[n] for n in config.style_layers], [references["style"][n] for n in config.style_layers])
            if config.content:
                terms["content"] = loss_functions.content_loss(
                    [fake_vgg[n] for n in config.content_layers], [references["content"][n] for n in config.content_layers])
        if config.l1:
            terms["l1"] = loss_functions.l1_loss(fake, target)
        if config.l2:
            terms["l2"] = loss_functions.l2_loss(fake, target)
        if config.total_variation:
            terms["total_variation"] = loss_functions.total_variation_loss(fake)

        # Eq. 12 (and the baselines' sums): the one place where loss weights are applied.
        total = tf.add_n([getattr(config, name) * terms[name] for name in LOSS_TERMS if getattr(config, name)] or [zero])
        return total, terms, fake

    def _discriminator_loss(self, source, target, fake, training: bool):
        """Algorithm 1 line 10: (loss, mean D(x, y), mean D(G(y), y)), the loss from D's logits.

        `training` is D's mode: True only inside its update (module docstring). PAN's hinge uses
        `perceptual_layer_weights`, the weights of the generator's feature-matching term."""
        config = self.loss_config
        real_output = self.discriminator([target, source], training=training)
        fake_output = self.discriminator([fake, source], training=training)
        if config.discriminator_loss == "pan_margin":
            loss = loss_functions.pan_margin_discriminator_loss(
                real_output[LOGITS], fake_output[LOGITS], fake_output[FEATURES], real_output[FEATURES],
                margin=config.pan_margin, layer_weights=config.perceptual_layer_weights)
        else:
            loss = loss_functions.cgan_discriminator_loss(real_output[LOGITS], fake_output[LOGITS])
        d_real, d_fake = (tf.reduce_mean(tf.cast(output[PROBABILITY], tf.float32)) for output in (real_output, fake_output))
        return loss, d_real, d_fake

    def _update_trackers(self, terms, batch_size, **values) -> dict[str, tf.Tensor]:
        values = {**terms, **values}
        weight = tf.cast(batch_size, tf.float32)
        for name, value in values.items():
            self.trackers[name].update_state(value, sample_weight=weight)
        return {name: self.trackers[name].result() for name in values}

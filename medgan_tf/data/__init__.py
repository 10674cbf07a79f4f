"""Data path: volume readers, world geometry, normalization, the TFRecord schema, the tf.data
reader and the built-in synthetic datasets (SPEC.md §3). Modules import TensorFlow lazily."""

"""Data path: volume readers, world geometry, normalization, the TFRecord schema, the tf.data
reader, pair preparation, pseudonyms, the manifest and the synthetic phantoms. Modules import
TensorFlow lazily."""

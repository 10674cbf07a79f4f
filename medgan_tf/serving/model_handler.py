"""A model handler for Apache Beam's RunInference: a medgan-tf export (or run directory) translating
batches of prepared slices, loaded once per worker process.

    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from medgan_tf.serving.model_handler import SliceModelHandler

    handler = KeyedModelHandler(SliceModelHandler("savedmodels/sct"))
    with beam.Pipeline() as pipeline:
        (pipeline
         | beam.Create([("patient-1", slices)])  # (B, S, S, C_in) float32 in [-1, 1]
         | RunInference(handler)                 # → (key, PredictionResult(slices, outputs))
         | beam.MapTuple(lambda key, result: (key, result.inference.shape))
         | beam.Map(print))

An element is a stack of model inputs as `medgan_tf.data.preparation.prepare` makes them (S×S
normalized slices or tiles, C_in = 1 or a 2.5D / multi-source window; any number, e.g. a whole
volume's); its inference is the (N, S, S, 1) normalized output. With `batch_size`, an element goes
through the model in forward passes of `batch_size` slices in order, as the local `translate` runs
a volume, so a pipeline reproduces its outputs bit for bit; without, in one pass. RunInference
groups elements only to share the call overhead. Beam keeps the loaded model in a per-process
shared handle (`load_model` runs once per worker process, not per bundle).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from medgan_tf.serving.loading import TranslationModel, load_model
from pipelines.runners import import_beam

_inference = import_beam("apache_beam.ml.inference.base")
ModelHandler, PredictionResult = _inference.ModelHandler, _inference.PredictionResult


class _NoMemoryNotice(logging.Filter):
    """Drops RunInference's warning, around every model load, that it cannot measure memory (its
    optional model manager is missing, not the `resource` module it names)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "memory usage cannot be fetched" not in record.getMessage()


if not any(isinstance(f, _NoMemoryNotice) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_NoMemoryNotice())


class SliceModelHandler(ModelHandler[np.ndarray, PredictionResult, TranslationModel]):
    """RunInference's handler for a medgan-tf model at `model_path` (an export's version or base
    folder, or a run directory, on a filesystem every worker sees); `precision` as `translate
    --precision`. `max_elements` caps how many batches one RunInference call receives. `threads`
    (None: TensorFlow's default, every core) caps the threads of one worker process's TensorFlow,
    so that N worker processes on one machine share its cores instead of each taking them all.
    `batch_size` (None: a whole element at once) is the most slices of one forward pass."""

    def __init__(self, model_path: str | Path, precision: str = "export", max_elements: int = 4,
                 threads: int | None = None, batch_size: int | None = None):
        super().__init__(min_batch_size=1, max_batch_size=max(1, int(max_elements)))
        self._model_path = str(model_path)
        self._precision = precision
        self._threads = threads
        self._batch_size = int(batch_size) if batch_size else None

    def load_model(self) -> TranslationModel:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if self._threads:
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(int(self._threads))
                tf.config.threading.set_inter_op_parallelism_threads(int(self._threads))
            except RuntimeError:  # TensorFlow already runs in this process (an in-process worker): its pool stays
                pass
        return load_model(self._model_path, precision=self._precision)

    def run_inference(self, batch: Sequence[np.ndarray], model: TranslationModel,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        """Every element (N, S, S, C_in) → PredictionResult(element, (N, S, S, 1) float32)."""
        return [PredictionResult(slices, self._translate(model, slices), self._model_path) for slices in batch]

    def _translate(self, model: TranslationModel, slices: np.ndarray) -> np.ndarray:
        step = self._batch_size or len(slices)
        if len(slices) <= step:  # (also an empty element: the model answers it)
            return np.asarray(model(slices), dtype=np.float32)
        return np.concatenate([np.asarray(model(slices[start : start + step]), dtype=np.float32)
                               for start in range(0, len(slices), step)])

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return int(sum(np.asarray(slices).nbytes for slices in batch))

    def get_metrics_namespace(self) -> str:
        return "medgan_tf"

"""The TF Serving kit every export writes: warmup requests, a model config, a batching template.

    OUT/models.config                  model_config_list: the model's name (OUT's folder name) and
                                       base_path (OUT, absolute); --model_config_file
    OUT/batching_parameters.txt        a commented template; --enable_batching --batching_parameters_file
    OUT/<version>/assets.extra/tf_serving_warmup_requests
                                       a TFRecord of PredictionLog records (tensorflow-serving-api):
                                       one PredictRequest per signature and batch size in
                                       WARMUP_BATCH_SIZES, built from the SavedModel's own signatures

TF Serving replays the warmup records when it loads a version, before it marks it available, so
the first client request no longer pays for the graph's first run (tracing, Grappler, oneDNN
primitives: ~55 s for a CasNet-6 on CPU against ~0.5 s a slice afterwards). The two config files
are written once: an existing one (e.g. edited for a container's paths) is left as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medgan_tf import files
from medgan_tf.errors import UserError

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MODEL_CONFIG_FILE = "models.config"
BATCHING_FILE = "batching_parameters.txt"
# 1: a single slice, what an interactive or REST client sends; 8: `translate`'s default batch and
# the batching template's max_batch_size, the batch at which the CPU reaches most of its GEMM speed.
# Each (signature, size) pair is run once at load time, so the set stays small.
WARMUP_BATCH_SIZES = (1, 8)
GRPC_DEFAULT_LIMIT = 4 * 1024 * 1024  # bytes: a gRPC client's default max_receive_message_length

BATCHING_TEMPLATE = """\
# TF Serving batching parameters (text protobuf BatchingParameters), used with
#   tensorflow_model_server --enable_batching --batching_parameters_file={path}
# Requests of several clients are merged into one batch of slices before the graph runs.

# Largest merged batch (slices). 8 is the largest batch the warmup requests were recorded for; a
# larger one needs more memory. Keep it at most the slices that fit one gRPC response
# (README "5. Export and serve": 15 slices of 256x256 under a client's default 4 MB).
max_batch_size {{ value: 8 }}

# How long (microseconds) a batch waits for more requests before it runs anyway: latency against throughput.
batch_timeout_micros {{ value: 5000 }}

# Batches that may run at once: the number of CPU cores (or 1 per GPU) is a good start.
num_batch_threads {{ value: {threads} }}

# Batches waiting in the queue before new requests are refused (UNAVAILABLE).
max_enqueued_batches {{ value: 100 }}

# Pad each merged batch up to one of these sizes (the last must equal max_batch_size); every size
# is a separately optimized shape, so list only sizes the warmup covers.
# allowed_batch_sizes: 1
# allowed_batch_sizes: 8

# The image inputs have a fixed size: no padding of variable-length inputs is needed.
pad_variable_length_inputs: false
"""


# --------------------------------------------------------------------------- warmup requests


def serving_protos():
    """The tensorflow-serving-api proto modules (predict, prediction_log, model_server_config), or a
    UserError saying how to install them in an environment built before they were required."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError as error:
        raise UserError(f"the export's TF Serving kit needs tensorflow-serving-api ({error}); install the pinned "
                        "requirements: pip install -r requirements.txt (or make venv)") from error
    return predict_pb2, prediction_log_pb2, model_server_config_pb2


def signature_inputs(version_dir: str | Path) -> dict[str, dict[str, tuple]]:
    """{signature name: {input name: (dtype enum, shape with -1 for any size, or None for an
    unknown rank)}} of the SavedModel in `version_dir`, read from its saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(version_dir) / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    result = {}
    for name in sorted(signatures):
        if name.startswith("__"):  # TensorFlow's own (e.g. __saved_model_init_op), not servable
            continue
        result[name] = {
            key: (info.dtype, None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim))
            for key, info in signatures[name].inputs.items()
        }
    return result


def warmup_requests(version_dir: str | Path, model_name: str, batch_sizes=WARMUP_BATCH_SIZES) -> list:
    """PredictionLog records: for each servable signature of the export and each batch size, a
    PredictRequest whose inputs have the signature's names, dtypes and shapes (the batch dimension
    = the batch size). Values: images 0, `*_high` parameters 1, everything else 0 — finite and
    with high > low, so the graph's guards pass. An input of unknown rank (a whole volume) gets
    (batch size, S, S) with S the export's image size."""
    import tensorflow as tf

    predict_pb2, prediction_log_pb2, _ = serving_protos()
    signatures = signature_inputs(version_dir)
    image_size = max((d for inputs in signatures.values() for _, shape in inputs.values() for d in shape or ()),
                     default=1)
    records = []
    for signature, inputs in signatures.items():
        for batch in batch_sizes:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for name, (dtype, shape) in inputs.items():
                dims = [batch, image_size, image_size] if shape is None else [
                    batch if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(shape)]
                value = 1 if name.endswith("_high") else 0
                # One value repeated over the shape: TensorProto's rule, which keeps the file small.
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=tf.dtypes.as_dtype(dtype), shape=dims))
            records.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return records


def write_warmup(version_dir: str | Path, model_name: str) -> Path:
    """Write `version_dir`/assets.extra/tf_serving_warmup_requests (see `warmup_requests`)."""
    import tensorflow as tf

    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in warmup_requests(version_dir, model_name):
            writer.write(record.SerializeToString())
    return path


def read_warmup(version_dir: str | Path) -> list:
    """The PredictionLog records of an export's warmup file."""
    import tensorflow as tf

    _, prediction_log_pb2, _ = serving_protos()
    path = Path(version_dir) / WARMUP_FILE
    return [prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            for raw in tf.data.TFRecordDataset(str(path))]


def kit_summary(version_dir: str | Path) -> str:
    """One line for the export's report: what the kit holds and where."""
    version_dir = Path(version_dir)
    return (f"TF Serving kit:  {WARMUP_FILE} (batch {', '.join(map(str, WARMUP_BATCH_SIZES))}; every signature), "
            f"{version_dir.parent / MODEL_CONFIG_FILE}, {version_dir.parent / BATCHING_FILE}")


# --------------------------------------------------------------------------- server configuration


def model_config_text(out_dir: str | Path) -> str:
    """models.config for the model base folder `out_dir`: one model named after the folder."""
    from google.protobuf import text_format

    model_server_config_pb2 = serving_protos()[2]

    out_dir = Path(out_dir).resolve()
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = out_dir.name
    model.base_path = str(out_dir)
    model.model_platform = "tensorflow"
    header = ("# TF Serving model config: tensorflow_model_server --model_config_file=models.config\n"
              "# base_path is this folder as exported; in a container, the path it is mounted at.\n"
              "# The highest version folder is served; --model_config_file_poll_wait_seconds reloads edits.\n")
    return header + text_format.MessageToString(config)


def write_server_config(out_dir: str | Path) -> list[Path]:
    """models.config and batching_parameters.txt in `out_dir`, each only when missing; returns
    the files written."""
    import os

    out_dir = Path(out_dir)
    written = []
    contents = {
        MODEL_CONFIG_FILE: lambda: model_config_text(out_dir),
        BATCHING_FILE: lambda: BATCHING_TEMPLATE.format(path=out_dir.resolve() / BATCHING_FILE,
                                                        threads=os.cpu_count() or 1),
    }
    for name, text in contents.items():
        if not (out_dir / name).exists():
            written.append(files.write_text_atomic(out_dir / name, text()))
    return written


def slices_per_message(image_size: int, outputs: int = 1, limit: int = GRPC_DEFAULT_LIMIT) -> int:
    """The most float32 (S, S, 1) slices whose PredictResponse (`outputs` tensors of B slices
    each, as TensorProto bytes) stays within `limit` bytes — the measured size, framing included."""
    import numpy as np
    import tensorflow as tf

    predict_pb2 = serving_protos()[0]

    def size(batch: int) -> int:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = "m"
        response.model_spec.signature_name = "serving_default"
        for index in range(outputs):
            array = np.zeros((batch, image_size, image_size, 1), np.float32)
            response.outputs[f"output{index}"].CopyFrom(tf.make_tensor_proto(array))
        return response.ByteSize()

    batch = limit // (image_size * image_size * 4 * outputs)
    while batch > 0 and size(batch) > limit:
        batch -= 1
    return batch

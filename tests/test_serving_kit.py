"""The TF Serving kit of an export: warmup requests that match the signatures and run, the model
config and the batching template beside the versions, request sizes under gRPC's 4 MB.

Tiny exports (64², untrained weights): a per-volume PET model (three signatures) and a 2.5D
two-source model (six input channels)."""

import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.serving import serving_kit

from helpers import SIZE, export_two_source_model, make_run  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("kit")
    make_run(root / "run", "pet_denoise")
    base = root / "models" / "medgan"
    assert main(["export", str(root / "run"), "--out", str(base)]) == 0
    two_source = export_two_source_model(root / "two")
    return {"per_volume": base / "1", "two_source": two_source}


def _requests(version_dir):
    records = serving_kit.read_warmup(version_dir)
    assert records and all(record.WhichOneof("log_type") == "predict_log" for record in records)
    return [record.predict_log.request for record in records]


@pytest.mark.parametrize("which", ["per_volume", "two_source"])
def test_warmup_requests_match_the_signatures(exports, which):
    import tensorflow as tf

    version = exports[which]
    signatures = tf.saved_model.load(str(version)).signatures
    requests = _requests(version)
    covered = sorted((r.model_spec.signature_name, r.inputs["source" if "source" in r.inputs else "volume"]
                      .tensor_shape.dim[0].size) for r in requests)
    assert covered == sorted((name, batch) for name in signatures for batch in serving_kit.WARMUP_BATCH_SIZES)
    for request in requests:
        assert request.model_spec.name == version.parent.name
        specs = signatures[request.model_spec.signature_name].structured_input_signature[1]
        assert sorted(request.inputs) == sorted(specs)
        for name, tensor in request.inputs.items():
            value = tf.make_ndarray(tensor)
            # TensorFlow's C++ reading of the proto (Tensor::FromProto, as TF Serving's) gives the same array
            parsed = tf.io.parse_tensor(tensor.SerializeToString(), specs[name].dtype).numpy()
            assert parsed.shape == value.shape and np.array_equal(parsed, value)
            assert tf.dtypes.as_dtype(tensor.dtype) == specs[name].dtype
            assert specs[name].shape.is_compatible_with(value.shape), (name, value.shape, specs[name].shape)


@pytest.mark.parametrize("which", ["per_volume", "two_source"])
def test_export_still_loads_and_serves_every_warmup_request(exports, which):
    import tensorflow as tf

    version = exports[which]
    loaded = tf.saved_model.load(str(version))  # a fresh load, with assets.extra/ in the folder
    names = set()
    for request in _requests(version):
        inputs = {name: tf.constant(tf.make_ndarray(tensor)) for name, tensor in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        names.add(request.model_spec.signature_name)
        for output in outputs.values():
            assert np.all(np.isfinite(output.numpy()))
        if "output" in outputs:
            batch = inputs["source"].shape[0]
            assert outputs["output"].shape == (batch, SIZE, SIZE, 1)
    assert names == {"serving_default", "physical", "fit_source_normalization"} == set(loaded.signatures)


def test_model_config_and_batching_template_beside_the_versions(exports):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = exports["per_volume"].parent
    # beside the version folders (a later test adds version 2), nothing else
    assert sorted(p.name for p in base.iterdir() if not p.name.isdigit()) == ["batching_parameters.txt", "models.config"]
    config = text_format.Parse((base / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    [model] = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("medgan", str(base.resolve()), "tensorflow")

    fields = set()
    for line in (base / "batching_parameters.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            fields.add(line.split()[0].rstrip(":"))
    assert fields == {"max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches",
                      "pad_variable_length_inputs"}
    assert f"max_batch_size {{ value: {max(serving_kit.WARMUP_BATCH_SIZES)} }}" in (
        base / "batching_parameters.txt").read_text()


def test_config_files_are_kept_on_the_next_export(exports, capsys):
    base = exports["per_volume"].parent
    edited = (base / "models.config").read_text().replace(str(base.resolve()), "/models/medgan")
    (base / "models.config").write_text(edited)
    run = base.parent.parent / "run"
    assert main(["export", str(run), "--out", str(base)]) == 0
    assert f"TF Serving kit:  assets.extra/tf_serving_warmup_requests (batch 1, 8; every signature), {base}/models.config" \
        in capsys.readouterr().out
    assert (base / "2" / serving_kit.WARMUP_FILE).is_file()
    assert (base / "models.config").read_text() == edited  # the user's edit survives


@pytest.mark.parametrize("size, outputs, expected", [(256, 1, 15), (256, 2, 7), (512, 1, 3)])
def test_slices_per_grpc_message(size, outputs, expected):
    # 16 slices of 256² are 4 MiB of floats alone, so the framing pushes them past the limit.
    assert serving_kit.slices_per_message(size, outputs) == expected


def test_missing_serving_api_is_one_line_that_says_how_to_install(monkeypatch):
    import sys

    from medgan_tf.errors import UserError

    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)  # as if not installed
    with pytest.raises(UserError, match=r"tensorflow-serving-api .*pip install -r requirements.txt"):
        serving_kit.serving_protos()

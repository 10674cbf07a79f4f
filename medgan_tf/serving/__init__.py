"""Serving: the export's signatures, writing an export, loading a model (export or run
directory, one `TranslationModel` interface) and translating whole volumes.

    signatures   — the serving graph and its normalization description
    export       — `export_generator`, `export_run`: TF Serving layout, atomic
    assets       — an export's version folder and assets, the precision and input checks (below the loaders)
    loading      — `load_model`, `TranslationModel`, `ExportedModel`, `RunModel`
    formats      — the export format table (SavedModel, ONNX, OpenVINO, LiteRT): what a path is
    format_export — `export_formats`: one export in several formats (int8 through quantize)
    runtimes     — one adapter per non-TensorFlow runtime (onnxruntime, openvino, ai-edge-litert)
    quantize     — post-training int8 of those artefacts and the accuracy gate they must pass
    calibration  — the slices int8 is calibrated and checked on (training records, or the phantom)
    translation  — `translate_volume`, `translate_file`
"""

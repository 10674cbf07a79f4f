"""`medgan-tf bench` helpers: median and warm-up logic, FLOP counting against hand counts, the
target ratios and the table. No timing is asserted anywhere."""

import math

import pytest

from medgan_tf.workflows import bench
from medgan_tf.workflows import timing as timing_lib


# --------------------------------------------------------------------------- median / repeats


@pytest.mark.parametrize(
    "values, expected",
    [([3.0], 3.0), ([5.0, 1.0, 3.0], 3.0), ([4.0, 1.0, 2.0, 3.0], 2.5), ([2.0, 2.0, 9.0], 2.0)],
)
def test_median(values, expected):
    assert timing_lib.median(values) == expected


def test_median_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        timing_lib.median([])


def test_time_repeats_excludes_warmup_and_times_each_call():
    # A fake clock advancing by the call number: call k (1-based, warm-up included) lasts k s.
    state = {"now": 0.0, "calls": 0}

    def clock():
        return state["now"]

    def work():
        state["calls"] += 1
        state["now"] += state["calls"]

    timing = timing_lib.time_repeats(work, repeats=3, warmup=2, clock=clock)
    assert state["calls"] == 5
    assert timing.seconds == [3.0, 4.0, 5.0]  # calls 1 and 2 were the warm-up
    assert timing.median == 4.0
    assert timing.as_dict()["warmup"] == 2


@pytest.mark.parametrize("repeats, warmup", [(0, 1), (1, -1)])
def test_time_repeats_rejects_bad_counts(repeats, warmup):
    with pytest.raises(ValueError, match="repeats"):
        timing_lib.time_repeats(lambda: None, repeats=repeats, warmup=warmup)


# --------------------------------------------------------------------------- FLOP counting


def test_model_flops_hand_count_tiny_model():
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 4, strides=2, padding="same", use_bias=False)(inputs)  # → 4×4×2
    x = keras.layers.GroupNormalization(groups=-1)(x)  # not counted
    x = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same")(x)  # → 8×8×3
    inner = keras.Model(inputs, x)
    outer_inputs = keras.Input((8, 8, 1))
    y = inner(outer_inputs)  # nested model is entered
    y = keras.layers.Dense(5)(y)  # 64 positions × 3 → 5
    model = keras.Model(outer_inputs, y)
    conv = 2 * (4 * 4 * 2) * (4 * 4 * 1)  # output pixels × C_out × (k·k·C_in)
    transposed = 2 * (4 * 4 * 2) * (4 * 4 * 3)  # input pixels × C_in × (k·k·C_out)
    dense = 2 * 64 * 3 * 5
    assert timing_lib.model_flops(inner) == conv + transposed == 1024 + 3072
    assert timing_lib.model_flops(model) == conv + transposed + dense


def _unet_flops_by_hand(image_size, widths, channels=1):
    """Independent count of one U-block: encoder convs from the spatial sizes, decoder transposed
    convs reading (skip + up) channels, output transposed conv to `channels`."""
    total, size, previous = 0, image_size, channels
    for filters in widths:
        size //= 2
        total += 2 * size * size * filters * 16 * previous
        previous = filters
    for level in range(len(widths) - 2, -1, -1):
        total += 2 * size * size * previous * 16 * widths[level]
        size *= 2
        previous = 2 * widths[level]
    total += 2 * size * size * previous * 16 * channels
    assert size * 2 == image_size
    return total


def test_model_flops_casnet_matches_independent_count():
    from medgan_tf.models import build_casnet

    experiment = bench.casnet_experiment("pet_ct", "medgan", 16, num_ublocks=2, base_filters=4)
    generator = build_casnet(experiment.generator, 16)
    widths = [4, 8, 16, 32]  # min(4·2^k, 512), log2(16) = 4 convs
    assert timing_lib.model_flops(generator) == 2 * _unet_flops_by_hand(16, widths)


def test_casnet6_hand_count_is_the_spec_figure():
    # The same independent count at the paper's size: 6 × one 256² U-block ≈ 71.4 GFLOP.
    widths = [64, 128, 256, 512, 512, 512, 512, 512]
    assert math.isclose(6 * _unet_flops_by_hand(256, widths) / 1e9, bench.CASNET6_GFLOP_PER_SLICE, rel_tol=1e-3)


# --------------------------------------------------------------------------- targets and table


def _figures(gemm=100.0, batch8_gflops=85.0, translate_seconds=10.0, pipeline=500.0, demo=20.0, workers=(10.0, 17.0),
             gemm_bf16=200.0, bf16_batch8_gflops=160.0, bf16_translate_seconds=6.0, train_256=(20.0, 12.0),
             archive=(8.0, 14.0)):
    per_slice = 71.4 / batch8_gflops
    bf16_per_slice = 71.4 / bf16_batch8_gflops
    iteration = {"image_size": 256, "num_ublocks": 6, "base_filters": 64, "batch_size": 1}
    return {
        "gemm": {"size": 4096, "gflops": gemm},
        "gemm_bf16": {"size": 4096, "gflops": gemm_bf16},
        "casnet6": {"gflop_per_slice": 71.37, "export_seconds": 12.0},
        "inference_batch1": {"slices_per_s": 1.0, "gflops": 71.4, "seconds_per_slice": 1.0},
        "inference_batch8": {"slices_per_s": 1 / per_slice, "gflops": batch8_gflops, "seconds_per_slice": per_slice},
        "inference_bf16_batch1": {"slices_per_s": 1.5, "gflops": 107.1, "seconds_per_slice": 1 / 1.5},
        "inference_bf16_batch8": {"slices_per_s": 1 / bf16_per_slice, "gflops": bf16_batch8_gflops, "seconds_per_slice": bf16_per_slice},
        "translate": {"slices": 16, "batch_size": 8, "seconds": translate_seconds},
        "translate_bf16": {"slices": 16, "batch_size": 8, "seconds": bf16_translate_seconds},
        "translate_tta_flips": {"slices": 16, "batch_size": 8, "seconds": 4.2 * translate_seconds},
        "train_iteration_256": {**iteration, "seconds": train_256[0], "slices_per_s": 1 / train_256[0]},
        "train_iteration_256_bf16": {**iteration, "seconds": train_256[1], "slices_per_s": 1 / train_256[1]},
        "train_iteration_demo": {"image_size": 64, "num_ublocks": 1, "base_filters": 16, "batch_size": 4, "seconds": 0.2, "slices_per_s": demo},
        "train_iteration_demo_bf16": {"image_size": 64, "num_ublocks": 1, "base_filters": 16, "batch_size": 4, "seconds": 0.15, "slices_per_s": 4 / 0.15},
        "input_pipeline": {"task": "pet_denoise", "image_size": 64, "batch_size": 4, "slices_per_s": pipeline},
        "convert_workers1": {"pairs": 4, "slices": 100, "seconds": 10.0, "slices_per_s": workers[0]},
        "convert_workers2": {"pairs": 4, "slices": 100, "seconds": 6.0, "slices_per_s": workers[1]},
        **{f"archive_workers{n}": {"workers": n, "volumes": 16, "image_size": 256, "seconds": 960.0 / rate,
                                   "volumes_per_minute": rate, "cpu_seconds": 90.0} for n, rate in zip((1, 2), archive)},
    }


def test_target_ratios_hand_values():
    figures = _figures()
    ratios = bench.target_ratios(figures)
    assert ratios["inference_batch8_vs_gemm"]["ratio"] == pytest.approx(0.85)
    assert ratios["inference_batch8_vs_gemm"]["met"]
    per_slice = 71.4 / 85.0
    assert ratios["translate_vs_batch8"]["ratio"] == pytest.approx(10.0 / (16 * per_slice), abs=1e-4)
    assert ratios["translate_vs_batch8"]["met"]  # 0.744 ≤ 1.2
    assert ratios["input_pipeline_vs_demo_training"]["ratio"] == pytest.approx(25.0)
    assert ratios["convert_2_vs_1_workers"]["ratio"] == pytest.approx(1.7)
    assert ratios["archive_2_vs_1_workers"]["ratio"] == pytest.approx(1.75)
    # bfloat16: slices/s scale with GFLOP/s at a fixed FLOP count, so 160 / 85 = 1.882× fp32.
    assert ratios["bf16_inference_batch8_vs_fp32"]["ratio"] == pytest.approx(160.0 / 85.0, abs=1e-4)
    assert ratios["bf16_inference_batch8_vs_bf16_gemm"]["ratio"] == pytest.approx(0.8)
    assert ratios["bf16_train_iteration_256_speedup"]["ratio"] == pytest.approx(20.0 / 12.0, abs=1e-4)
    assert ratios["bf16_translate_vs_batch8"]["ratio"] == pytest.approx(6.0 / (16 * 71.4 / 160.0), abs=1e-4)  # 0.840
    assert ratios["tta_flips_vs_translate"]["ratio"] == pytest.approx(4.2)  # ≤ 4.4
    assert set(ratios) == set(bench.TARGETS)
    assert all(item["met"] for item in ratios.values())


def test_target_ratios_misses():
    ratios = bench.target_ratios(_figures(batch8_gflops=50.0, translate_seconds=30.0, pipeline=100.0, workers=(10.0, 12.0),
                                          archive=(8.0, 12.0)))
    assert ratios["archive_2_vs_1_workers"]["ratio"] == pytest.approx(1.5) and not ratios["archive_2_vs_1_workers"]["met"]
    assert not ratios["inference_batch8_vs_gemm"]["met"]
    assert not ratios["translate_vs_batch8"]["met"]  # 30 / (16 · 71.4/50) = 1.31 > 1.2
    assert not ratios["input_pipeline_vs_demo_training"]["met"]
    assert not ratios["convert_2_vs_1_workers"]["met"]


@pytest.mark.parametrize(
    "figures, name, ratio",
    [
        ({"batch8_gflops": 100.0, "bf16_batch8_gflops": 150.0}, "bf16_inference_batch8_vs_fp32", 1.5),  # < 1.6
        ({"gemm_bf16": 250.0, "bf16_batch8_gflops": 170.0}, "bf16_inference_batch8_vs_bf16_gemm", 0.68),  # < 0.7
        ({"train_256": (13.0, 10.0)}, "bf16_train_iteration_256_speedup", 1.3),  # < 1.4
        ({"bf16_batch8_gflops": 142.8, "bf16_translate_seconds": 10.0}, "bf16_translate_vs_batch8", 1.25),  # > 1.2
    ],
)
def test_bfloat16_target_misses(figures, name, ratio):
    item = bench.target_ratios(_figures(**figures))[name]
    assert item["ratio"] == pytest.approx(ratio, abs=1e-3)
    assert item["met"] is False


def test_bfloat16_target_at_its_bound_is_met():
    # Exactly 1.6× fp32 and exactly 1.2× the per-slice time: targets are inclusive.
    ratios = bench.target_ratios(_figures(batch8_gflops=100.0, bf16_batch8_gflops=160.0, bf16_translate_seconds=16 * 1.2 * 71.4 / 160.0))
    assert ratios["bf16_inference_batch8_vs_fp32"]["met"] is True
    assert ratios["bf16_translate_vs_batch8"]["met"] is True


def test_unmeasured_figure_leaves_its_target_unjudged():
    figures = _figures()
    del figures["train_iteration_256_bf16"]  # what --quick skips
    ratios = bench.target_ratios(figures)
    assert ratios["bf16_train_iteration_256_speedup"] == {
        "ratio": None, "target": 1.4, "met": None, "meaning": ratios["bf16_train_iteration_256_speedup"]["meaning"],
    }
    assert ratios["bf16_inference_batch8_vs_fp32"]["met"] is True  # the others are still judged
    report = {"figures": figures, "seconds": 1.0, "cpus": 2, "load_average_before": [0, 0, 0], "load_average_after": [0, 0, 0],
              "tensorflow": "2.21.0", "quick": True, "targets": ratios, "bfloat16_native": [False, "CPU has neither"]}
    table = bench.format_table(report)
    assert "N/A  bf16_train_iteration_256_speedup: — (target 1.4)" in table
    assert "MedGAN iteration bf16 (demo)" in table and "MedGAN iteration bf16 " not in table.replace("bf16 (demo)", "")
    assert "NOT native" in table


def test_format_table_lists_every_figure_and_target():
    report = {"figures": _figures(), "seconds": 100.0, "cpus": 2, "load_average_before": [0.1, 0.1, 0.1],
              "load_average_after": [1.0, 1.0, 1.0], "tensorflow": "2.21.0", "quick": True,
              "bfloat16_native": [True, "CPU has avx512_bf16"]}
    report["targets"] = bench.target_ratios(report["figures"])
    table = bench.format_table(report)
    for text in ("GEMM fp32", "GEMM bf16", "inference batch 1", "inference batch 8", "inference bf16 batch 1",
                 "inference bf16 batch 8", "translate bf16", "MedGAN iteration bf16", "MedGAN iteration bf16 (demo)",
                 "MedGAN iteration (demo)", "input pipeline", "1 Beam worker", "2 Beam worker", "MET", "--quick",
                 "16 volumes of 256²", "14.0 volumes/min",
                 "bfloat16 native: CPU has avx512_bf16"):
        assert text in table, text
    for name in bench.TARGETS:
        assert f" {name}: " in table, name


def test_bfloat16_gemm_runs_in_bfloat16():
    result = timing_lib.gemm_gflops(64, repeats=1, warmup=0, dtype="bfloat16")
    assert result["dtype"] == "bfloat16" and result["gflops"] > 0


def test_train_iteration_figures_restore_the_policy():
    import keras

    experiment = bench.casnet_experiment("pet_denoise", "medgan_1g", 32, num_ublocks=1, base_filters=4)
    figures = timing_lib.train_iteration_figures(experiment, batch_size=1, repeats=1, warmup=0, policy="mixed_bfloat16")
    assert figures["policy"] == "mixed_bfloat16" and figures["seconds"] > 0
    assert keras.mixed_precision.global_policy().name == "float32"


def test_bench_is_a_subcommand():
    from medgan_tf.cli import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--json"])
    assert args.quick and args.json


# --------------------------------------------------------------------------- conversion speed


def _tensorflow_example_bytes(source, target, key, index, spacing, source_params, target_params):
    """The reference: the same record built with TensorFlow's own tf.train.Example classes."""
    import numpy as np
    import tensorflow as tf

    def feature(kind, values):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[values]))
        if kind == "float":
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    features = {
        "source": feature("bytes", np.asarray(source, "<f4").tobytes()),
        "target": feature("bytes", np.asarray(target, "<f4").tobytes()),
        "height": feature("int64", [source.shape[0]]),
        "width": feature("int64", [source.shape[1]]),
        "patient_key": feature("bytes", key.encode()),
        "slice_index": feature("int64", [index]),
        "spacing": feature("float", spacing),
    }
    for side, params in (("source", source_params), ("target", target_params)):
        features[f"{side}_low"] = feature("float", [params["low"]])
        features[f"{side}_high"] = feature("float", [params["high"]])
        features[f"{side}_unit"] = feature("bytes", params["unit"].encode())
        features[f"{side}_kind"] = feature("bytes", params["kind"].encode())
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


@pytest.mark.parametrize("size, index, low", [(4, 0, -1000.0), (16, 300, 0.0), (8, 2**40, -3.5e-7)])
def test_example_encoding_without_tensorflow_equals_tf_train_example(size, index, low):
    import numpy as np

    from medgan_tf.data import schema

    rng = np.random.default_rng(size)
    source = rng.uniform(-1, 1, (size, size)).astype(np.float32)
    target = rng.uniform(-1, 1, (size, size)).astype(np.float32)
    source_params = {"low": low, "high": 2000.0, "unit": "HU", "kind": "window"}
    target_params = {"low": 0.1, "high": 12345.678, "unit": "Bq/ml", "kind": "scale"}
    spacing = (0.85, 1.0, 2.5)
    ours = schema.encode_example(source[..., None], target, "a1b2c3d4e5f60718", index, spacing, source_params, target_params)
    reference = _tensorflow_example_bytes(source, target, "a1b2c3d4e5f60718", index, spacing, source_params, target_params)
    import tensorflow as tf

    # Same message (map entries may be written in another order than protobuf's own sort).
    assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(reference)
    assert tf.train.Example.FromString(ours).SerializeToString(deterministic=True) == reference
    parsed = schema.parse_example_numpy(ours)
    np.testing.assert_array_equal(parsed["source"][..., 0], source)
    assert parsed["slice_index"] == index


def test_varint_matches_protobuf_for_edge_values():
    from medgan_tf.data import schema

    assert schema._varint(0) == b"\x00"
    assert schema._varint(1) == b"\x01"
    assert schema._varint(300) == b"\xac\x02"  # the protobuf documentation's example
    assert schema._varint(-1) == b"\xff" * 9 + b"\x01"  # int64 −1: ten bytes

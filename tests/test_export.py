"""Export of a digits-trained MobileViT-XXS to every format and quantization, verified on real images; the
refusals (failed verification, missing extra, wrong option); and the benchmark.

Slow-ish (about two minutes: each conversion takes 5-20 s on 2 cores), and run in CI like the rest.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vitkit
from vitkit.cli.main import main
from vitkit.export import MIN_AGREEMENT, MissingExtra, VerificationFailed, export
from vitkit.export.api import export_data
from vitkit.export.verify import compare
from vitkit.checkpoint import load_model

# fail rather than skip without the extras: CI must never pass with these tests silently left out
for _module in ("onnxruntime", "litert_torch", "ai_edge_quantizer"):
    if importlib.util.find_spec(_module) is None:
        pytest.fail(f"{_module} is missing: `make setup` installs the export extras (pip install -e '.[test,export]')")

MAX_QUANTIZED_LOGIT_DIFF = {"fp16": 0.05, "dynamic": 1.0, "int8": 1.0}
CASES = [
    ("tflite", "none"),
    ("tflite", "dynamic"),
    ("tflite", "fp16"),
    ("tflite", "int8"),
    ("onnx", "none"),
    ("onnx", "dynamic"),
    ("onnx", "int8"),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The README's digits recipe (5 epochs, about 98% validation top-1), with a normalisation that is not
    mean 0 / std 1, so that every file must fold it in."""
    out = tmp_path_factory.mktemp("export") / "run"
    # near the digits' own statistics (mean 0.31, std 0.38), and different per channel so that a fold that
    # mixed up the channels would show
    vitkit.train(recipe="digits_quickstart", output=str(out), mean="0.25,0.3,0.35", std="0.35,0.4,0.45")
    return out


@pytest.fixture(scope="module")
def digits(run):
    model, meta = load_model(run)
    p = model.preprocess
    assert p.mean == (0.25, 0.3, 0.35) and p.std == (0.35, 0.4, 0.45)
    data = export_data("digits", meta["class_names"], p, max_val=64)
    with torch.no_grad():  # normalised here by hand, independently of vitkit's code
        reference = model(
            (data.val / 255 - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(1, 3, 1, 1)
        )
    return data, reference.numpy()


def run_independently(path: str, fmt: str, pixels: np.ndarray) -> np.ndarray:
    """The file run with its runtime's plain API, as an app would: no vitkit code between."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: pixels.astype(np.float32)})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    logits = []
    for image in pixels.transpose(0, 2, 3, 1):  # NHWC, one image per call
        x = image[None]
        if inp["dtype"] == np.int8:
            scale, zero_point = inp["quantization"]
            x = np.clip(np.round(x / scale) + zero_point, -128, 127)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        if out["dtype"] == np.int8:
            scale, zero_point = out["quantization"]
            y = (y.astype(np.float32) - zero_point) * scale
        logits.append(y)
    return np.stack(logits)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,quantize", CASES, ids=[f"{f}-{q}" for f, q in CASES])
def test_export_is_verified_and_matches_pytorch(run, digits, tmp_path, fmt, quantize):
    path = tmp_path / f"model_{quantize}.{fmt}"
    result = export(run, fmt, quantize, output=path, log=lambda *a: None)

    check = result.verification
    assert path.is_file() and result.size_bytes == path.stat().st_size
    assert check.count == 359 and check.agreement >= MIN_AGREEMENT[quantize]
    assert check.reference_accuracy >= 0.95
    assert check.accuracy >= check.reference_accuracy - 0.02  # quantization may cost a little, not more
    sidecar = json.loads((tmp_path / f"{path.name}.json").read_text())
    assert sidecar["class_names"] == [str(i) for i in range(10)] and sidecar["quantize"] == quantize
    float32 = quantize == "none"
    size_mb = result.size_bytes / 1e6
    assert 3.5 < size_mb < 5.5 if float32 else size_mb < 2.5  # quantized weights shrink the file

    # the file itself, run without vitkit, agrees with the unfused PyTorch model on the same images
    data, reference = digits
    logits = run_independently(str(path), fmt, data.val.numpy())
    agreement = (logits.argmax(1) == reference.argmax(1)).mean()
    if float32:
        np.testing.assert_allclose(logits, reference, atol=1e-3, rtol=1e-4)
    else:  # logits span about 9 here; measured on 359 images: fp16 0.02, dynamic 0.34-0.71, int8 0.57-0.75
        assert agreement >= 0.95 and np.abs(logits - reference).max() < MAX_QUANTIZED_LOGIT_DIFF[quantize]

    if fmt == "tflite":
        assert result.ops and not any(op.startswith("CUSTOM") for op in result.ops)  # builtin ops only
        assert "CONV_2D" in result.ops and "DEPTHWISE_CONV_2D" in result.ops
        dtype = result.io["input"]["dtype"]
        assert result.io["input"]["shape"] == [1, 64, 64, 3]
        assert dtype == ("int8" if quantize == "int8" else "float32")
        if quantize == "int8":  # pixels 0-255 map onto int8 as about pixel - 128
            assert abs(result.io["input"]["scale"] - 1.0) < 0.01 and result.io["input"]["zero_point"] == -128
            assert result.io["output"]["dtype"] == "int8"
    else:
        assert result.io["input"]["shape"][0] == "batch" and result.io["input"]["shape"][1:] == [3, 64, 64]


@pytest.mark.slow
def test_failed_verification_keeps_no_file_and_the_old_one_intact(run, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the previous export")

    # a converter that silently gets the weights wrong, as the seed's did (it wrote a file that outputs NaN)
    import vitkit.export.api as api

    def broken_fuse(model):
        fused = vitkit.models.fuse(model)
        with torch.no_grad():
            fused.head.weight.copy_(torch.randn_like(fused.head.weight))
        return fused

    monkeypatch.setattr(api, "fuse", broken_fuse)
    with pytest.raises(VerificationFailed, match="agrees with PyTorch on only .* so it was not kept"):
        export(run, "onnx", output=path, log=lambda *a: None)
    assert path.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no sidecar, no temporary file

    # a file its runtime refuses to load (LiteRT's int8 softmax did, with a calibrated output scale)
    monkeypatch.undo()

    def refusing_runner(*args, **kwargs):
        raise RuntimeError("tflite/kernels/activations.cc:560 output->params.scale not near 1.f / 256\nmore")

    monkeypatch.setattr(api, "make_runner", refusing_runner)
    with pytest.raises(VerificationFailed, match=r"does not run in its runtime \(tflite/kernels.*1.f / 256\), so"):
        export(run, "onnx", output=path, log=lambda *a: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_nan_output_fails_verification():
    reference = np.eye(4, dtype=np.float32)
    check = compare(np.full((4, 4), np.nan, dtype=np.float32), reference, np.arange(4), 0.98)
    assert not check.passed and check.agreement == 0.0 and check.reference_accuracy == 1.0


@pytest.mark.slow
def test_refusals_are_one_sentence(run, tmp_path, monkeypatch, capsys):
    assert main(["export", str(run), "--format", "onnx", "--quantize", "fp16"]) == 2
    assert "float16 weights are a TFLite option" in capsys.readouterr().err

    assert main(["export", str(run), "--format", "tflite", "-o", str(tmp_path / "model.onnx")]) == 2
    assert "should end in .tflite" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(MissingExtra, match=r'pip install "vitkit\[onnx\]"'):
        export(run, "onnx", output=tmp_path / "model.onnx")
    assert main(["bench", str(run), "--formats", "torch,onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "vitkit[onnx]"' in err[0]
    assert not any(tmp_path.iterdir())


def test_builtin_op_check_refuses_flex_ops(monkeypatch):
    from vitkit.export import to_tflite

    monkeypatch.setattr(to_tflite, "op_names", lambda path: ["CONV_2D", "CUSTOM:FlexErf"])
    with pytest.raises(ValueError, match="non-builtin ops \\(CUSTOM:FlexErf\\)"):
        to_tflite.check_builtin_ops("model.tflite")


@pytest.mark.slow
def test_export_cli_prints_the_contract(run, tmp_path, capsys):
    path = tmp_path / "digits.tflite"
    assert main(["export", str(run), "--format", "tflite", "--quantize", "int8", "-o", str(path), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any("int8 NHWC, RGB pixels 0-255; int8 = round(pixel / " in line and ") - 128" in line for line in out)
    assert any("TFLite builtin op kinds, no custom or Flex ops" in line for line in out)
    record = json.loads(out[-1])
    assert record["path"] == str(path) and record["verification"]["agreement"] >= 0.98


@pytest.mark.slow
def test_bench_measures_each_format(run, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", str(run), "--formats", "torch,onnx:int8,tflite", "--batch-sizes", "1,4", "--seconds", "0.05"]
    assert main(args + ["--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "median ms" in table and "tflite" in table
    report = json.loads(out.read_text())
    rows = {(r["format"], r["batch_size"]): r for r in report["rows"]}
    assert set(rows) == {(f, b) for f in ("torch", "onnx:int8", "tflite") for b in (1, 4)}
    for r in rows.values():
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and r["images_per_s"] > 0
        assert r["top1"] >= rows[("torch", 1)]["top1"] - 0.02 and r["agreement"] >= 0.98
    assert rows[("torch", 1)]["agreement"] == 1.0 and rows[("torch", 1)]["top1"] >= 0.95
    assert rows[("onnx:int8", 1)]["size_mb"] < rows[("torch", 1)]["size_mb"] / 2


@pytest.mark.slow
def test_bench_a_vit_by_name_without_weights(capsys):
    """A model name benchmarks random weights (no accuracy); ViT's attention converts to both formats."""
    from vitkit.export.bench import bench

    report = bench("vit_cifar", "onnx,tflite", (1,), image_size=36, seconds=0.05, log=lambda *a: None)
    assert [r.format for r in report.rows] == ["onnx", "tflite"]
    assert all(r.top1 is None and r.median_ms > 0 for r in report.rows)
    with pytest.raises(ValueError, match="neither a checkpoint nor a model name"):
        bench("no_such_model", "onnx", (1,))
    with pytest.raises(ValueError, match="Unknown format 'coreml'"):
        bench("vit_cifar", "coreml", (1,))


@pytest.mark.slow
def test_bench_reuses_its_conversions_and_times_an_exported_file(run, tmp_path, capsys):
    """A second bench of the same checkpoint converts nothing; a file written by vitkit export is timed as it is."""
    from vitkit.export import export
    from vitkit.export.bench import bench

    said = []
    first = bench(str(run), "onnx", (1, 2), seconds=0.05, rounds=1, log=said.append)
    assert any("converting to onnx" in s for s in said)
    said.clear()
    second = bench(str(run), "onnx", (1, 2), seconds=0.05, rounds=1, log=said.append)
    assert any("reusing onnx" in s for s in said) and not any("converting" in s for s in said)
    assert [r.top1 for r in second.rows] == [r.top1 for r in first.rows]
    assert not list(Path(run).glob(".bench/*/*.tmp")) and not list(Path(run).glob(".bench/*/.*.tmp"))

    onnx = export(run, "onnx", output=tmp_path / "m.onnx", log=lambda s: None)
    report = bench(onnx.path, batch_sizes=(1, 3), seconds=0.05, rounds=1, log=lambda s: None)
    assert [(r.format, r.batch_size) for r in report.rows] == [("onnx", 1), ("onnx", 3)]
    assert all(r.median_ms > 0 for r in report.rows)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, formats",
    [
        ("mobilevitv2_050", ("tflite", "onnx")),
        ("mobilevitv3_xxs", ("tflite",)),
    ],
)
def test_every_mobilevit_family_exports_fully_quantized_with_builtin_ops(name, formats, tmp_path):
    """MobileViTv2's separable attention and v3's fusion, trained briefly on digits at 32 px
    (where layer5's 1x1 map also takes the resize path): full-int8 TFLite and int8 ONNX, each verified on the
    validation images, TFLite with builtin ops only. Both found a bug: LiteRT refused v2's int8 softmax, and
    onnxruntime's shape inference lost a hand-made one. benchmarks/RESULTS.md has every format for each family
    (v3 on v2 too, which adds only a concat and a residual to what these two cover; left out for CI time)."""
    run = tmp_path / "run"
    vitkit.train(model=name, data="digits", image_size=32, epochs=5, output=str(run))
    for fmt in formats:  # v1's ONNX int8 is tested above
        result = export(run, fmt, "int8", output=tmp_path / f"model.{fmt}", log=lambda *a: None)
        assert result.verification.agreement >= MIN_AGREEMENT["int8"]
        if fmt == "tflite":
            assert result.ops and not any(op.startswith("CUSTOM") for op in result.ops)
            assert result.io["input"]["dtype"] == "int8"

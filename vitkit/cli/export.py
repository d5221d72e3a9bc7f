"""``vitkit export`` and ``vitkit bench``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint as .tflite or .onnx, verified against PyTorch on validation images",
        description=(
            "Convert a checkpoint to TFLite/LiteRT or ONNX, run the file with its own runtime on validation "
            "images and keep it only if its top-1 agreement with PyTorch reaches the minimum (float 99.9%, "
            "fp16 99%, int8 98%). The file takes RGB pixels 0-255 resized to the input size (normalisation is "
            "inside) and returns logits; PATH.json beside it records inputs, outputs, classes and the checks."
        ),
    )
    p.add_argument("checkpoint", help="a run folder (uses best.json) or a checkpoint .json / .safetensors")
    p.add_argument("--format", required=True, choices=["tflite", "onnx"])
    p.add_argument(
        "--quantize",
        default="none",
        choices=["none", "dynamic", "fp16", "int8"],
        help="none: float32; dynamic: int8 weights (the keras.io example's choice); fp16: float16 weights (TFLite); "
        "int8: full int8, calibrated on training images (default: none)",
    )
    p.add_argument("-o", "--output", help="file to write (default: RUN_FOLDER/MODEL[_QUANTIZE].tflite|.onnx)")
    p.add_argument(
        "--calibration-data",
        metavar="SPEC",
        help="data spec (as for train) for int8 calibration and verification; default: the checkpoint's data",
    )
    p.add_argument("--image-size", type=int, help="input size of the file (default: the checkpoint's)")
    p.add_argument("--layout", choices=["nhwc", "nchw"], help="input layout (default: tflite nhwc, onnx nchw)")
    p.add_argument("--batch-size", type=int, default=1, help="TFLite's fixed batch size (ONNX takes any; default 1)")
    p.add_argument("--min-agreement", type=float, help="top-1 agreement with PyTorch to require, 0-1")
    p.add_argument("--verify-images", type=int, default=1000, help="validation images to verify on (default 1000)")
    p.add_argument(
        "--calibration-images", type=int, default=1024, help="training images to calibrate int8 on (default 1024)"
    )
    p.add_argument("--json", action="store_true", help="end with one line of JSON describing the export")
    p.set_defaults(run=run_export)

    p = sub.add_parser(
        "bench",
        help="latency, throughput, size and accuracy of torch / compile / onnx / tflite side by side",
        description="Benchmark deployment formats of a checkpoint (or a model name, with random weights) in one run, "
        "or time an exported .onnx / .tflite file as it is. A checkpoint's converted files are kept in RUN/.bench "
        "and reused by the next bench of the same weights, input size and data.",
    )
    p.add_argument("source", metavar="CHECKPOINT_MODEL_OR_FILE")
    p.add_argument(
        "--formats",
        default="torch,onnx,onnx:dynamic,onnx:int8,tflite,tflite:dynamic,tflite:fp16,tflite:int8",
        help="comma-separated: torch, compile, onnx[:dynamic|int8], tflite[:dynamic|fp16|int8] (default: all but compile)",
    )
    p.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    p.add_argument("--data", help="data spec for accuracy and int8 calibration (default: the checkpoint's)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--threads", type=int, help="CPU threads for every runtime (default: torch's default)")
    p.add_argument("--seconds", type=float, default=2.0, help="time to spend measuring each format and batch size")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds over all formats (default 3)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' for stdout)")
    p.set_defaults(run=run_bench)


def run_export(args: argparse.Namespace) -> int:
    from vitkit.export import export

    if min(args.batch_size, args.verify_images, args.calibration_images) < 1:
        raise ValueError("--batch-size, --verify-images and --calibration-images must be 1 or more.")
    r = export(
        args.checkpoint,
        args.format,
        args.quantize,
        args.output,
        calibration_data=args.calibration_data,
        image_size=args.image_size,
        layout=args.layout,
        batch_size=args.batch_size,
        min_agreement=args.min_agreement,
        max_images=args.verify_images,
        calibration_images=args.calibration_images,
    )
    print(f"wrote {r.path} ({r.size_bytes / 1e6:.2f} MB) in {r.seconds:.0f} s")
    for role in ("input", "output"):
        t = r.io[role]
        quant = ""
        if "scale" in t:
            quant = (
                f"; int8 = round(pixel / {t['scale']:.6g}) {_signed(t['zero_point'])}"
                if role == "input"
                else f"; logit = (int8 {_signed(-t['zero_point'])}) * {t['scale']:.6g}"
            )
        layout = f" {t['layout']}" if "layout" in t else ""
        kind = "RGB pixels 0-255" if role == "input" else "logits"
        print(f"  {role:<6} {t['name']} {t['shape']} {t['dtype']}{layout}, {kind}{quant}")
    if r.ops:
        print(f"  {len(r.ops)} TFLite builtin op kinds, no custom or Flex ops")
    print(f"  verified: {r.verification.summary()}")
    print(f"  details: {r.path}.json")
    if args.json:
        print(json.dumps(r.to_dict()))
    return 0


def _signed(n: int) -> str:
    return f"+ {n}" if n >= 0 else f"- {-n}"


def run_bench(args: argparse.Namespace) -> int:
    from vitkit.export.bench import bench

    text = ",".join(args.batch_sizes) if isinstance(args.batch_sizes, list) else str(args.batch_sizes)
    try:
        batch_sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise ValueError(
            f"--batch-sizes takes comma-separated integers, e.g. 1,32; got '{text}'."
        ) from None
    report = bench(
        args.source, args.formats, batch_sizes, args.data, args.image_size, args.threads, args.seconds, args.rounds
    )
    print(
        f"\n{report.model} at {report.image_size}x{report.image_size}, {report.threads} threads, {report.machine.get('cpu')}"
    )
    print(report.table())
    if args.json == "-":
        print(json.dumps(report.to_dict()))
    elif args.json:
        from vitkit.utils import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"results: {args.json}")
    return 0

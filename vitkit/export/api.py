"""``vitkit export``: checkpoint -> .tflite / .onnx, verified on real images before it is kept."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vitkit.checkpoint import load_model
from vitkit.data.sources import eval_set, list_data
from vitkit.export.deploy import DeployModel, require, to_layout
from vitkit.export.verify import MIN_AGREEMENT, Verification, VerificationFailed, compare
from vitkit.models import fuse
from vitkit.preprocess import Preprocess
from vitkit.utils import atomic_path, atomic_write_text, check_writable

FORMATS = ("tflite", "onnx")
QUANTIZATIONS = {"tflite": ("none", "dynamic", "fp16", "int8"), "onnx": ("none", "dynamic", "int8")}
DEFAULT_LAYOUT = {"tflite": "nhwc", "onnx": "nchw"}  # what each ecosystem's apps hand over
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}


def check_choice(fmt: str, quantize: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format '{fmt}'; choose tflite or onnx.")
    if quantize not in QUANTIZATIONS[fmt]:
        hint = " (float16 weights are a TFLite option, for its GPU delegate)" if quantize == "fp16" else ""
        raise ValueError(f"{fmt} export takes --quantize {', '.join(QUANTIZATIONS[fmt])}, not '{quantize}'{hint}.")
    require(*_modules(fmt))


def _modules(fmt: str) -> tuple[str, ...]:
    if fmt == "tflite":
        from vitkit.export.to_tflite import TFLITE_MODULES

        return TFLITE_MODULES
    from vitkit.export.to_onnx import ONNX_MODULES

    return ONNX_MODULES


def convert(
    deploy: DeployModel,
    fmt: str,
    quantize: str,
    path: str | Path,
    batch_size: int,
    image_size: int,
    calibration: torch.Tensor | None,
) -> None:
    """Write ``deploy`` (BatchNorm already folded) as ``fmt``; ``calibration``: [N, 3, S, S] pixels for int8."""
    sample_nchw = (
        calibration[:batch_size]
        if calibration is not None
        else torch.full((batch_size, 3, image_size, image_size), 128.0)
    )
    sample = to_layout(sample_nchw, deploy.layout)
    calib = to_layout(calibration, deploy.layout) if calibration is not None else None
    if fmt == "tflite":
        from vitkit.export.to_tflite import convert_tflite

        convert_tflite(deploy, sample, path, quantize, calib)
    else:
        from vitkit.export.to_onnx import convert_onnx

        convert_onnx(deploy, sample, path, quantize, calib)


FORMAT_OF_SUFFIX = {suffix: fmt for fmt, suffix in SUFFIX.items()}


def make_runner(fmt: str, path: str | Path, layout: str, threads: int | None = None, spin: bool = True):
    """The file's own runtime; ``spin=False``: ONNX Runtime's idle threads sleep (a server, sharing cores)."""
    if fmt == "tflite":
        from vitkit.export.to_tflite import TFLiteRunner

        return TFLiteRunner(path, layout, threads)
    from vitkit.export.to_onnx import OnnxRunner

    return OnnxRunner(path, layout, threads, spin=spin)


def read_sidecar(path: str | Path) -> tuple[str, dict, str]:
    """An exported file -> (its format, its sidecar JSON, its input layout); a file without the JSON that
    vitkit export writes beside it (model, classes, preprocessing) is refused in one sentence."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}; give a run folder, a checkpoint or an exported file.")
    if not side.is_file():
        raise FileNotFoundError(
            f"{path} has no {side.name} beside it (its model, classes and preprocessing); give a file written by "
            "vitkit export, or the run folder it came from."
        )
    fmt = FORMAT_OF_SUFFIX[path.suffix]
    info = json.loads(side.read_text())
    return fmt, info, info["io"]["input"].get("layout", DEFAULT_LAYOUT[fmt]).lower()


@dataclass
class ExportResult:
    path: str
    format: str
    quantize: str
    size_bytes: int
    seconds: float
    verification: Verification
    io: dict = field(default_factory=dict)  # input/output tensors: name, shape, dtype, layout, scale, zero point
    ops: list[str] = field(default_factory=list)  # TFLite operator kinds (all builtin)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExportData:
    """Validation pixels with labels, and calibration pixels (None unless asked for), all [N, 3, S, S]
    float 0-255."""

    name: str
    val: torch.Tensor
    labels: np.ndarray
    calibration: torch.Tensor | None


def export_data(
    data: str,
    class_names: list[str],
    preprocess: Preprocess,
    val_fraction: float | None = None,
    max_val: int = 1000,
    max_calibration: int = 1024,
    seed: int = 0,
    split_seed: int = 0,
) -> ExportData:
    """Validation images (up to ``max_val``) and calibration images (up to ``max_calibration`` training images)
    as the model evaluates them, ``preprocess.eval_pixels``: the pixels `vitkit predict` computes for the same
    files. ``max_calibration=0`` skips them: only int8 needs them, and only the chosen ones are decoded."""
    try:
        listing = list_data(data, val_fraction, split_seed)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} Give --calibration-data with images of the model's classes.") from None
    if listing.class_names != class_names:
        raise ValueError(
            f"{data} has classes {listing.class_names[:5]}... but the model was trained on {class_names[:5]}...; "
            "give --calibration-data with the same class folders."
        )
    g = torch.Generator().manual_seed(seed)
    val_idx = torch.randperm(len(listing.val), generator=g)[:max_val].sort().values
    cal_idx = torch.randperm(len(listing.train), generator=g)[:max_calibration]
    val, _ = eval_set(listing.val.subset(val_idx.numpy()), preprocess)
    calibration = eval_set(listing.train.subset(cal_idx.numpy()), preprocess)[0] if max_calibration else None
    return ExportData(
        name=f"{listing.name}: {len(val)} validation images",
        val=val.images.float(),
        labels=val.labels.numpy(),
        calibration=calibration.images.float() if calibration is not None else None,
    )


@torch.no_grad()
def reference_logits(model: torch.nn.Module, pixels: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """The checkpoint's own model (not the fused copy that is converted) on the same pixels."""
    deploy = DeployModel(model, "nchw").eval()
    return torch.cat([deploy(chunk) for chunk in pixels.split(batch_size)]).float().numpy()


def default_output(checkpoint: str | Path, meta: dict, fmt: str, quantize: str, image_size: int) -> Path:
    size = "" if image_size == meta["preprocess"]["input_size"] else f"_{image_size}"
    name = f"{meta['model']}{size}{'' if quantize == 'none' else '_' + quantize}{SUFFIX[fmt]}"
    return Path(meta["_folder"]) / name


def export(
    checkpoint: str | Path,
    format: str = "tflite",
    quantize: str = "none",
    output: str | Path | None = None,
    calibration_data: str | None = None,
    image_size: int | None = None,
    layout: str | None = None,
    batch_size: int = 1,
    min_agreement: float | None = None,
    max_images: int = 1000,
    calibration_images: int = 1024,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Convert a checkpoint, run the file with its own runtime on validation images, and keep it only if its
    top-1 agreement with PyTorch reaches ``min_agreement`` (default per quantization: ``MIN_AGREEMENT``).

    The file takes RGB pixels 0-255 (resized to ``image_size``; normalisation is inside) in ``layout``
    (tflite: NHWC, onnx: NCHW) and returns logits. TFLite files have a fixed batch of ``batch_size``; ONNX
    files take any batch. Next to the file, ``PATH.json`` records its inputs, outputs, classes and checks.
    """
    check_choice(format, quantize)
    layout = layout or DEFAULT_LAYOUT[format]
    model, meta = load_model(checkpoint)
    if image_size:
        model.preprocess = dataclasses.replace(model.preprocess, input_size=image_size)
    p = model.preprocess
    size = p.input_size
    recorded = meta["data"]
    data = calibration_data or recorded["spec"]
    if not data:
        raise ValueError("The checkpoint does not name its data; give --calibration-data with images of its classes.")
    output = Path(output) if output else default_output(checkpoint, meta, format, quantize, size)
    if output.suffix != SUFFIX[format]:
        raise ValueError(f"A {format} file should end in {SUFFIX[format]}; got {output.name}.")
    check_writable(output)  # before any image is decoded or converted
    calibration_images = calibration_images if quantize == "int8" else 0
    images = export_data(
        data, meta["class_names"], p, recorded["val_fraction"], max_images, calibration_images,
        split_seed=recorded["split_seed"],
    )  # fmt: skip
    min_agreement = MIN_AGREEMENT[quantize] if min_agreement is None else min_agreement

    start = time.perf_counter()
    what = {"none": "float32", "dynamic": "dynamic-range int8", "fp16": "float16 weights", "int8": "full int8"}
    log(
        f"converting {meta['model']} to {format} ({what[quantize]}, input {size}x{size} {layout.upper()})"
        + (f", calibrating on {len(images.calibration)} training images" if quantize == "int8" else "")
    )
    deploy = DeployModel(fuse(model), layout).eval()  # fuse() keeps the float model intact for the reference
    with atomic_path(output) as tmp:
        convert(deploy, format, quantize, tmp, batch_size, size, images.calibration)
        log(f"verifying on {len(images.labels)} validation images ({images.name})")
        try:
            runner = make_runner(format, tmp, layout)
            logits = runner(images.val.numpy())
        except RuntimeError as e:  # the runtime refuses the file it was given (a kernel's constraint)
            reason = str(e).strip().splitlines()[0]
            raise VerificationFailed(
                f"The exported {format} file does not run in its runtime ({reason}), so it was not kept; "
                "try another --quantize and report this model and option."
            ) from None
        check = compare(logits, reference_logits(model, images.val), images.labels, min_agreement)
        if not check.passed:
            raise VerificationFailed(
                f"The exported {format} file agrees with PyTorch on only {check.agreement:.1%} of "
                f"{check.count} images (minimum {min_agreement:.1%}; accuracy {check.accuracy:.1%} vs "
                f"{check.reference_accuracy:.1%}), so it was not kept; try more --calibration-images or a milder "
                "--quantize."
            )
        ops = []
        if format == "tflite":
            from vitkit.export.to_tflite import op_names

            ops = op_names(tmp)
        result = ExportResult(
            path=str(output),
            format=format,
            quantize=quantize,
            size_bytes=tmp.stat().st_size,
            seconds=round(time.perf_counter() - start, 1),
            verification=check,
            io=runner.describe(),
            ops=ops,
        )
        sidecar = {
            **result.to_dict(),
            "checkpoint": str(checkpoint),
            "model": meta["model"],
            "class_names": meta["class_names"],
            "preprocessing": p.to_dict(),
            "pixels": (
                f"RGB pixels 0-255 (uint8 values as float, or int8 as the input tensor's scale says): {p.describe()}; "
                "the normalisation is inside the file; output: logits"
            ),
        }
        atomic_write_text(sidecar_path(output), json.dumps(sidecar, indent=2) + "\n")
    return result


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")

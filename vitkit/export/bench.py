"""``vitkit bench``: latency, throughput, size and accuracy of each deployment format, side by side in one run.

Every format runs the same thing, ``DeployModel``: RGB pixels 0-255 in, logits out, BatchNorm folded, on
the same number of CPU threads. Timings cover the runtime call only (the input already in the file's
layout and dtype), as an app would see them. Every file is built and checked first; then the formats
are timed in interleaved rounds, so that a burst of load on a shared machine does not land on one of them.
"""

from __future__ import annotations

import dataclasses
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vitkit.export.api import (
    DEFAULT_LAYOUT,
    QUANTIZATIONS,
    SUFFIX,
    check_choice,
    convert,
    export_data,
    make_runner,
    read_sidecar,
    reference_logits,
)
from vitkit.export.deploy import DeployModel
from vitkit.export.verify import compare
from vitkit.inference.runtime import memory_format, prepare_for_inference
from vitkit.models import fuse
from vitkit.preprocess import Preprocess
from vitkit.utils import atomic_path

TORCH_FORMATS = ("torch", "compile")
DEFAULT_FORMATS = (
    "torch",
    "onnx",
    "onnx:dynamic",
    "onnx:int8",
    "tflite",
    "tflite:dynamic",
    "tflite:fp16",
    "tflite:int8",
)


def parse_formats(text: str | list[str]) -> list[tuple[str, str]]:
    """ "torch,onnx:int8,tflite" -> [("torch", "none"), ("onnx", "int8"), ("tflite", "none")]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = []
    for item in (i.strip() for i in items if i.strip()):
        fmt, _, quantize = item.partition(":")
        quantize = quantize or "none"
        if fmt in TORCH_FORMATS and quantize == "none":
            formats.append((fmt, quantize))
            continue
        if fmt not in QUANTIZATIONS:
            raise ValueError(
                f"Unknown format '{item}'; use torch, compile, onnx[:dynamic|int8] or tflite[:dynamic|fp16|int8]."
            )
        check_choice(fmt, quantize)
        formats.append((fmt, quantize))
    if not formats:
        raise ValueError("Give at least one format, e.g. --formats torch,onnx,tflite.")
    return formats


def label(fmt: str, quantize: str) -> str:
    return fmt if quantize == "none" else f"{fmt}:{quantize}"


class TorchRunner:
    """PyTorch eager (or ``torch.compile``) on the fused model in its preferred memory order."""

    def __init__(self, model: torch.nn.Module, compile: bool = False):
        fused = prepare_for_inference(model)  # what vitkit eval and predict run
        self.memory_format = memory_format(fused)
        deploy = DeployModel(fused, "nchw").eval()
        self.fn = torch.compile(deploy, dynamic=False) if compile else deploy
        self.size_bytes = sum(t.numel() * t.element_size() for t in fused.state_dict().values())
        self.batch_size = None

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).contiguous(
            memory_format=self.memory_format
        )

    @torch.inference_mode()
    def invoke(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [self.invoke(self.prepare(pixels[i : i + 128])).numpy() for i in range(0, len(pixels), 128)]
        )


@dataclass
class BenchRow:
    format: str
    batch_size: int
    size_mb: float
    median_ms: float  # one call of batch_size images
    p90_ms: float
    images_per_s: float
    top1: float | None = None  # on the validation images (None for a model without trained weights)
    agreement: float | None = None  # top-1 agreement with PyTorch fp32 eager


@dataclass
class BenchReport:
    source: str
    model: str
    image_size: int
    threads: int
    data: str | None
    machine: dict = field(default_factory=dict)
    rows: list[BenchRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        head = f"{'format':<16}{'batch':>6}{'size MB':>9}{'median ms':>11}{'p90 ms':>9}{'img/s':>9}{'top-1':>9}{'agree':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            top1 = "-" if r.top1 is None else f"{r.top1:.2%}"
            agree = "-" if r.agreement is None else f"{r.agreement:.2%}"
            lines.append(
                f"{r.format:<16}{r.batch_size:>6}{r.size_mb:>9.2f}{r.median_ms:>11.2f}{r.p90_ms:>9.2f}"
                f"{r.images_per_s:>9.1f}{top1:>9}{agree:>9}"
            )
        return "\n".join(lines)


def time_calls(fn: Callable[[], object], seconds: float, min_calls: int = 10) -> np.ndarray:
    """Per-call wall times in ms, after a short warm-up, for at least ``seconds`` and ``min_calls`` calls."""
    for _ in range(3):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return np.array(times)


def load_source(source: str, image_size: int | None):
    """A checkpoint (trained weights, class names, data) or a registered model name (random weights)."""
    from vitkit.models import create_model, list_models

    if Path(source).exists():
        from vitkit.checkpoint import load_model

        return load_model(source)
    if source not in list_models():
        raise ValueError(f"'{source}' is neither a checkpoint nor a model name; see `vitkit models`.")
    model = create_model(source, **({"image_size": image_size} if image_size else {})).eval()
    return model, {"model": source, "class_names": None}


def bench_file(
    path: str | Path,
    batch_sizes: tuple[int, ...] = (1, 32),
    threads: int | None = None,
    seconds: float = 2.0,
    rounds: int = 3,
    log: Callable[[str], None] = print,
) -> BenchReport:
    """Time an exported .onnx / .tflite file as it is (its sidecar JSON gives the model and input size); a
    TFLite file runs at its own fixed batch size only."""
    path = Path(path)
    fmt, info, layout = read_sidecar(path)
    size = Preprocess.from_dict(info["preprocessing"]).input_size
    threads = threads or torch.get_num_threads()
    runner = make_runner(fmt, path, layout, threads)
    if runner.batch_size is not None and set(batch_sizes) != {runner.batch_size}:
        log(f"  {path.name} has a fixed batch of {runner.batch_size}; timing that batch size only")
        batch_sizes = (runner.batch_size,)
    pixels = torch.rand(max(batch_sizes), 3, size, size, generator=torch.Generator().manual_seed(0)).numpy() * 255
    report = BenchReport(str(path), info["model"], size, threads, None, _machine())
    cases = [
        (BenchRow(label(fmt, info.get("quantize", "none")), b, round(path.stat().st_size / 1e6, 3), 0.0, 0.0, 0.0),
         runner, runner.prepare(pixels[:b]))
        for b in batch_sizes
    ]  # fmt: skip
    report.rows += time_cases(cases, rounds, seconds, log)
    return report


def bench(
    source: str,
    formats: str | list[str] = DEFAULT_FORMATS,
    batch_sizes: tuple[int, ...] = (1, 32),
    data: str | None = None,
    image_size: int | None = None,
    threads: int | None = None,
    seconds: float = 2.0,
    rounds: int = 3,
    max_images: int = 1000,
    log: Callable[[str], None] = print,
) -> BenchReport:
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("Batch sizes must be 1 or more, e.g. --batch-sizes 1,32.")
    if rounds < 1 or not seconds > 0:
        raise ValueError("--rounds must be 1 or more and --seconds above 0.")
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    if Path(source).suffix in SUFFIX.values():
        return bench_file(source, batch_sizes, threads, seconds, rounds, log)
    formats = parse_formats(formats)
    model, meta = load_source(source, image_size)
    if image_size:
        model.preprocess = dataclasses.replace(model.preprocess, input_size=image_size)
    size = model.preprocess.input_size
    recorded = meta.get("data") or {}
    data = data or recorded.get("spec")
    if data and meta["class_names"]:
        int8 = any(quantize == "int8" for _, quantize in formats)
        images = export_data(
            data,
            meta["class_names"],
            model.preprocess,
            recorded.get("val_fraction"),
            max_images,
            max_calibration=1024 if int8 else 0,
            split_seed=recorded.get("split_seed", 0),
        )
        val, labels, calibration = images.val, images.labels, images.calibration
        reference = reference_logits(model, val)
        log(f"accuracy on {len(labels)} validation images of {images.name}")
    else:  # random weights: timings and sizes only; int8 calibrates on random pixels
        val, labels, reference = None, None, None
        calibration = torch.rand(64, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    report = BenchReport(source, meta["model"], size, threads, data if labels is not None else None, _machine())
    sample = (val if val is not None else calibration).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        # a checkpoint's converted files are kept in its run folder and reused by the next bench of the same
        # weights, size and data; a model name's random weights are converted into a temporary folder
        folder = cache_folder(meta, size, data) if meta.get("_folder") else Path(tmp)
        cases = []  # (row, runner, input): every file is built and checked before any timing starts
        for fmt, quantize in formats:
            runner, accuracy = None, (None, None)
            for b in batch_sizes:
                if runner is None or (runner.batch_size is not None and runner.batch_size != b):
                    runner, size_bytes = _build(model, fmt, quantize, b, size, calibration, folder, log)
                    if labels is not None and accuracy == (None, None):
                        check = compare(runner(val.numpy()), reference, labels, 0.0)
                        accuracy = (check.accuracy, check.agreement)
                batch = np.resize(sample, (b, *sample.shape[1:]))  # repeats images to fill the batch
                row = BenchRow(label(fmt, quantize), b, round(size_bytes / 1e6, 3), 0.0, 0.0, 0.0, *accuracy)
                cases.append((row, runner, runner.prepare(batch)))

        report.rows += time_cases(cases, rounds, seconds, log)
    return report


def time_cases(cases: list, rounds: int, seconds: float, log) -> list[BenchRow]:
    """Time (row, runner, input) cases; rounds interleave them, so a burst of load on a shared machine hits all
    of them alike."""
    times = [[] for _ in cases]
    for r in range(rounds):
        log(f"  timing round {r + 1}/{rounds}")
        for (row, runner, x), ms in zip(cases, times):
            ms.extend(time_calls(lambda: runner.invoke(x), seconds / rounds))
    rows = []
    for (row, _, _), ms in zip(cases, times):
        median = float(np.median(ms))
        row.median_ms, row.p90_ms = round(median, 3), round(float(np.percentile(ms, 90)), 3)
        row.images_per_s = round(row.batch_size / median * 1e3, 1)
        rows.append(row)
    return rows


def cache_folder(meta: dict, size: int, data: str | None) -> Path:
    """RUN/.bench/<weights digest>_<size>_<data digest>: converted files stay valid only for these weights
    (a retrained run gets a new folder), this input size and this calibration data."""
    import hashlib

    from vitkit.utils import digest

    weights = digest(Path(meta["_folder"]) / meta["weights"])
    data_key = hashlib.sha256(str(data).encode()).hexdigest()[:6]
    return Path(meta["_folder"]) / ".bench" / f"{weights}_{size}_{data_key}"


def _build(model, fmt: str, quantize: str, batch_size: int, size: int, calibration, folder: Path, log):
    """A runner for one format (a TFLite file is built per batch size: its input shape is fixed)."""
    if fmt in TORCH_FORMATS:
        runner = TorchRunner(model, compile=fmt == "compile")
        return runner, runner.size_bytes
    layout = DEFAULT_LAYOUT[fmt]
    # ONNX files take any batch; a TFLite file's batch is fixed
    path = folder / f"{fmt}_{quantize}{f'_b{batch_size}' if fmt == 'tflite' else ''}{SUFFIX[fmt]}"
    what = label(fmt, quantize) + (f" at batch {batch_size}" if fmt == "tflite" else "")
    if path.is_file():
        log(f"  reusing {what}: {path}")
    else:
        log(f"  converting to {what}")
        deploy = DeployModel(fuse(model), layout).eval()
        with atomic_path(path) as tmp:  # a bench killed mid-conversion leaves nothing to be reused
            convert(deploy, fmt, quantize, tmp, batch_size, size, calibration if quantize == "int8" else None)
    return make_runner(fmt, path, layout), path.stat().st_size


def _machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": _cores(), "torch": torch.__version__}
    for module in ("onnxruntime", "ai_edge_litert", "litert_torch"):
        try:
            from importlib.metadata import version

            info[module] = version(module.replace("_", "-"))
        except Exception:
            pass
    return info


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

"""What the server runs, behind one interface: uint8 evaluation pixels [B, 3, S, S] in, probabilities out.

A checkpoint runs in PyTorch (the model ``vitkit predict`` runs); an exported ``.onnx`` / ``.tflite`` file runs in
ONNX Runtime or LiteRT, with the classes and preprocessing its sidecar JSON recorded at export. ``auto`` times
every candidate that is installed and verified for this checkpoint and keeps the fastest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vitkit.export.api import FORMAT_OF_SUFFIX, make_runner, read_sidecar
from vitkit.preprocess import Preprocess
from vitkit.utils import digest

BACKENDS = ("auto", "torch", "onnx", "tflite")
FILE_FORMATS = FORMAT_OF_SUFFIX  # .onnx -> onnx, .tflite -> tflite


@dataclass
class ServedModel:
    """A model ready to serve: its name and version as the API reports them, and ``run``."""

    name: str
    version: str  # the first 12 hex digits of the weights' (or the file's) SHA-256
    backend: str
    source: str
    class_names: list[str]
    preprocess: Preprocess
    run: Callable[[torch.Tensor], np.ndarray]  # uint8 [B, 3, S, S] -> float32 [B, classes] probabilities

    def warm_up(self, max_batch: int) -> None:
        """One call at every batch size the batcher can form, so no request pays for a first call."""
        size = self.preprocess.input_size
        for batch in range(1, max_batch + 1):
            self.run(torch.zeros(batch, 3, size, size, dtype=torch.uint8))

    def describe(self) -> str:
        return (
            f"{self.name} ({self.backend}, version {self.version}, {len(self.class_names)} classes) from {self.source}"
        )


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def torch_model(checkpoint: str | Path, device: str = "auto") -> ServedModel:
    from vitkit.checkpoint import resolve_checkpoint
    from vitkit.inference.predict import Classifier

    classifier = Classifier(checkpoint, device)
    meta = classifier.meta
    return ServedModel(
        name=meta["model"],
        version=digest(Path(meta["_folder"]) / meta["weights"]),
        backend="torch" if classifier.device.type == "cpu" else f"torch ({classifier.device})",
        source=meta.get("source") or str(resolve_checkpoint(checkpoint)),  # a hub name, or the checkpoint's JSON
        class_names=classifier.class_names,
        preprocess=classifier.preprocess,
        run=lambda pixels: classifier.probabilities(pixels).numpy(),
    )


def file_model(path: str | Path, threads: int | None = None) -> ServedModel:
    """An exported file and its sidecar JSON; a file that is not vitkit's (or needs TensorFlow's Flex ops) is
    refused in one sentence."""
    from vitkit.export.deploy import require

    path = Path(path)
    fmt = FILE_FORMATS[path.suffix]
    require("onnxruntime" if fmt == "onnx" else "ai_edge_litert")
    if fmt == "tflite" and path.is_file():  # a foreign file's Flex ops are named before its missing sidecar
        from vitkit.export.to_tflite import check_builtin_ops

        check_builtin_ops(path)
    fmt, info, layout = read_sidecar(path)
    runner = make_runner(fmt, path, layout, threads, spin=False)
    quantize = info.get("quantize", "none")
    return ServedModel(
        name=info["model"],
        version=digest(path),
        backend=fmt if quantize == "none" else f"{fmt}:{quantize}",
        source=str(path),
        class_names=info["class_names"],
        preprocess=Preprocess.from_dict(info["preprocessing"]),
        run=lambda pixels: softmax(runner(pixels.numpy().astype(np.float32))),
    )


def verified_exports(checkpoint: str | Path) -> list[Path]:
    """Float exports of this checkpoint that vitkit export verified, newer than its weights, in its folder: a file
    left from an earlier run in the same folder, or with other classes or preprocessing, is not one."""
    from vitkit.checkpoint import read_meta
    from vitkit.inference.runtime import names_released_weights

    if names_released_weights(checkpoint):  # released weights have no exports beside them
        return []
    meta = read_meta(checkpoint)
    folder = Path(meta["_folder"])
    weights_time = (folder / meta["weights"]).stat().st_mtime
    found = []
    for sidecar in sorted(folder.glob("*.json")):
        path = sidecar.with_suffix("")
        if path.suffix not in FILE_FORMATS or not path.is_file():
            continue
        try:
            info = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        check = info.get("verification") or {}
        if (
            info.get("quantize") == "none"
            and check.get("agreement", 0) >= check.get("min_agreement", 1)  # export keeps only passing files
            and info.get("class_names") == meta["class_names"]
            and info.get("preprocessing") == meta["preprocess"]
            and path.stat().st_mtime >= weights_time
        ):
            found.append(path)
    return found


def installed(fmt: str) -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime" if fmt == "onnx" else "ai_edge_litert") is not None


def seconds_per_request(model: ServedModel, max_batch: int, calls: int = 5) -> float:
    """What ``auto`` minimises: one request alone (batch 1) plus one image's share of a full batch."""
    size = model.preprocess.input_size
    cost = 0.0
    for batch in sorted({1, max_batch}):
        pixels = torch.zeros(batch, 3, size, size, dtype=torch.uint8)
        model.run(pixels)  # first call: allocation
        start = time.perf_counter()
        for _ in range(calls):
            model.run(pixels)
        cost += (time.perf_counter() - start) / calls / batch
    return cost


def open_model(
    source: str | Path,
    backend: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    max_batch: int = 16,
    log: Callable[[str], None] = print,
) -> ServedModel:
    """A run folder, checkpoint or exported file -> the ``ServedModel`` for ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend '{backend}'; choose {', '.join(BACKENDS)}.")
    source = Path(source)
    if source.suffix in FILE_FORMATS:
        fmt = FILE_FORMATS[source.suffix]
        if backend not in ("auto", fmt):
            raise ValueError(f"{source.name} is a {fmt} file; serve it with --backend {fmt} (or auto).")
        return file_model(source, threads)
    if backend == "torch" or (backend == "auto" and device != "cpu" and torch.cuda.is_available()):
        return torch_model(source, device)
    exports = verified_exports(source)
    if backend != "auto":
        files = [p for p in exports if FILE_FORMATS[p.suffix] == backend]
        if not files:
            raise FileNotFoundError(
                f"{source} holds no verified float {backend} export of this checkpoint; write one with "
                f"vitkit export {source} --format {backend}, or use --backend torch."
            )
        return file_model(files[0], threads)
    candidates = [torch_model(source, "cpu")]
    candidates += [file_model(p, threads) for p in exports if installed(FILE_FORMATS[p.suffix])]
    if len(candidates) == 1:
        return candidates[0]
    costs = [seconds_per_request(m, max_batch) for m in candidates]
    log(
        "backend auto: "
        + ", ".join(f"{m.backend} {c * 1e3:.1f} ms" for m, c in zip(candidates, costs))
        + " per request (batch 1 + a full batch's share); serving with the fastest"
    )
    return candidates[int(np.argmin(costs))]

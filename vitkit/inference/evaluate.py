"""Evaluation: the loop training's validation pass runs, and ``vitkit eval`` on a checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vitkit.data.sources import ImageSet, eval_set, list_data
from vitkit.inference.metrics import ClassificationMeter
from vitkit.inference.runtime import load_for_inference, memory_format, pick_device
from vitkit.preprocess import normalize


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    data: ImageSet,
    device: torch.device,
    batch_size: int,
    amp_dtype: torch.dtype | None = None,
) -> ClassificationMeter:
    """Loss, top-1/top-5 and confusion matrix of ``model`` on evaluation pixels (``preprocess.eval_pixels``),
    shared out across processes when a process group is running."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    model.eval()
    meter = ClassificationMeter(model.num_classes, device)
    order = memory_format(model)
    for idx in torch.arange(rank, len(data), world).split(batch_size):
        x = normalize(data.images[idx].to(device, non_blocking=True), model.preprocess, order)
        y = data.labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x).float()
        meter.update(logits, y, F.cross_entropy(logits, y))
    meter.all_reduce()
    return meter


@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float
    count: int
    per_class: dict[str, float | None]
    confusion: list[list[int]]
    confusion_png: str | None = None
    data: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def evaluate(
    checkpoint: str | Path,
    data: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    plot: bool = True,
) -> EvalResult:
    """Top-1, top-5, per-class accuracy and the confusion matrix on the validation split of ``data``, by
    default the run's own: the same images, pixels and batches as training's validation pass, so the top-1
    is the one the run logged."""
    dev = pick_device(device)
    model, meta = load_for_inference(checkpoint, dev)
    recorded = meta["data"]
    spec = data or recorded["spec"]
    if not spec:
        raise ValueError("The checkpoint does not name its data; give --data.")
    listing = list_data(spec, recorded["val_fraction"], recorded["split_seed"])  # the run's own split
    names = meta["class_names"]
    if listing.class_names != names:
        raise ValueError(
            f"{spec} has classes {listing.class_names[:5]}... but the checkpoint was trained on "
            f"{names[:5]}...; evaluate on data with the same class folders."
        )
    val, report = eval_set(listing.val, model.preprocess)
    meter = evaluate_model(model, val, dev, batch_size or meta.get("eval_batch_size", 128))  # v1 had none
    skipped = f"; {len(report.skipped)} unreadable files skipped" if report and report.skipped else ""
    result = EvalResult(
        top1=meter.top1,
        top5=meter.top5,
        loss=meter.loss,
        count=meter.count,
        per_class=dict(zip(names, meter.per_class_accuracy())),
        confusion=meter.confusion.tolist(),
        data=f"{listing.name}: {len(val)} validation images, {len(names)} classes{skipped}",
    )
    if plot:
        from vitkit.plots import plot_confusion

        path = Path(meta["_folder"]) / f"confusion_{listing.name.replace('/', '_')}.png"
        title = f"{meta['model']} on {listing.name}: top-1 {meter.top1:.2%}"
        result.confusion_png = str(plot_confusion(meter.confusion, names, path, title))
    return result

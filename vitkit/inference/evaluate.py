"""Evaluation: the loop training's validation pass runs, and ``vitkit eval`` on a checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vitkit.data.sources import ImageSet, eval_set, list_data
from vitkit.inference.metrics import ClassificationMeter
from vitkit.inference.runtime import load_for_inference, memory_format, pick_device
from vitkit.preprocess import normalize
from vitkit.utils import check_writable


TTA_MODES = ("none", "hflip")


def check_tta(tta: str) -> None:
    if tta not in TTA_MODES:
        raise ValueError(f"Unknown test-time augmentation '{tta}'; choose {', '.join(TTA_MODES)}.")


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    data: ImageSet,
    device: torch.device,
    batch_size: int,
    amp_dtype: torch.dtype | None = None,
    tta: str = "none",
) -> ClassificationMeter:
    """Loss, top-1/top-5 and confusion matrix of ``model`` on evaluation pixels (``preprocess.eval_pixels``),
    shared out across processes when a process group is running.

    ``tta="hflip"`` scores each image by the mean of the class probabilities of the image and its mirror (test-time
    augmentation; twice the compute, and only right for a model trained with horizontal flips). The meter then
    gets the log of that mean as the logits, so top-k and the loss are those of the averaged prediction."""
    check_tta(tta)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    model.eval()
    meter = ClassificationMeter(model.num_classes, device)
    order = memory_format(model)
    mine = list(torch.arange(rank, len(data), world).split(batch_size))  # every image on exactly one process
    for images, idx, _ in data.batches(mine, pin=device.type == "cuda"):
        x = normalize(images.to(device, non_blocking=True), model.preprocess, order)
        y = data.labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x).float()
            if tta == "hflip":
                mirrored = model(torch.flip(x, dims=[3])).float()  # x: [B, C, H, W]; dim 3 is the width
                logits = torch.logaddexp(logits.log_softmax(1), mirrored.log_softmax(1)) - math.log(2)  # log mean p
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
    warning: str | None = None  # e.g. hflip TTA on a model trained without flips

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SPLITS = ("auto", "train", "val", "all")


def trained_with_hflip(meta: dict) -> bool | None:
    """Whether training mirrored its images, from the checkpoint; None when it does not say (older checkpoints
    recorded only the config, where "auto" left the choice to the data)."""
    if "hflip" in meta:
        return meta["hflip"]
    configured = (meta.get("config") or {}).get("hflip")
    return configured if isinstance(configured, bool) else None


def evaluate(
    checkpoint: str | Path,
    data: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    split: str = "auto",
    confusion_png: str | Path | None = None,
    tta: str = "none",
) -> EvalResult:
    """Top-1, top-5, per-class accuracy and the confusion matrix of a checkpoint.

    By default (``split="auto"``) the run's own data is scored on its validation split: the same images,
    pixels and batches as training's validation pass, so the top-1 is the one the run logged; other data (a
    held-out test folder) is scored whole, every image. ``split`` chooses train, val or all explicitly. Classes
    are matched by name: a test set may hold a subset of the model's classes (those missing are reported), not
    classes the model does not know. ``confusion_png`` names a file to draw the confusion matrix in (written
    where asked, not into the run folder, where the next training would leave it stale). ``tta="hflip"`` also scores
    each image's mirror and averages the probabilities (see ``evaluate_model``).
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split '{split}'; choose {', '.join(SPLITS)}.")
    check_tta(tta)
    if confusion_png is not None:
        check_writable(confusion_png)
    dev = pick_device(device)
    model, meta = load_for_inference(checkpoint, dev)
    recorded = meta["data"]
    spec = data or recorded["spec"]
    if not spec:
        raise ValueError("The checkpoint does not name its data; give --data.")
    own = data is None or data == recorded["spec"]
    split = ("val" if own else "all") if split == "auto" else split
    listing = list_data(spec, recorded["val_fraction"], recorded["split_seed"])  # the run's own split
    names = meta["class_names"]
    unknown = [c for c in listing.class_names if c not in names]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ValueError(
            f"{spec} holds classes the model was not trained on ({shown}); its classes are "
            f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}."
        )
    missing = [c for c in names if c not in listing.class_names]
    to_model = np.array([names.index(c) for c in listing.class_names], dtype=np.int64)
    records = {"train": listing.train, "val": listing.val, "all": listing.train + listing.val}[split]
    val, report = eval_set(records.relabel(to_model), model.preprocess)
    batch = batch_size or meta.get("eval_batch_size", 128)  # v1 checkpoints had none
    meter = evaluate_model(model, val, dev, batch, tta=tta)
    skipped = f"; {len(report.skipped)} unreadable files skipped" if report and report.skipped else ""
    result = EvalResult(
        top1=meter.top1,
        top5=meter.top5,
        loss=meter.loss,
        count=meter.count,
        per_class=dict(zip(names, meter.per_class_accuracy())),
        confusion=meter.confusion.tolist(),
        data=(
            f"{listing.name}: {len(val)} images ({'every image' if split == 'all' else split + ' split'}), "
            f"{len(names) - len(missing)} of the model's {len(names)} classes"
            + (f" (absent: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})" if missing else "")
            + skipped
            + ("; each image also scored mirrored (hflip test-time augmentation)" if tta == "hflip" else "")
        ),
    )
    if tta == "hflip" and trained_with_hflip(meta) is False:
        result.warning = (
            "warning: this model was trained without horizontal flips, so an image's mirror may not look like its "
            "class to it; compare with --tta none before trusting the hflip figure."
        )
    if confusion_png is not None:
        from vitkit.plots import plot_confusion

        title = f"{meta['model']} on {listing.name}: top-1 {meter.top1:.2%}"
        result.confusion_png = str(plot_confusion(meter.confusion, names, Path(confusion_png), title))
    return result

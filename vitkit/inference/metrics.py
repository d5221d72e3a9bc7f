"""Running classification metrics: loss, top-1, top-5, confusion matrix (all-reducible across processes)."""

from __future__ import annotations

import torch
import torch.distributed as dist


class ClassificationMeter:
    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.k = min(5, num_classes)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)  # [true, predicted]
        self.top5_correct = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        if loss is not None:
            self.loss_sum += loss.detach().double() * len(target)
        topk = logits.topk(self.k, dim=1).indices
        self.top5_correct += (topk == target[:, None]).any(dim=1).sum()
        index = target * self.num_classes + topk[:, 0]
        self.confusion += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            for t in (self.loss_sum, self.confusion, self.top5_correct):
                dist.all_reduce(t)

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        return float(self.confusion.diag().sum()) / max(self.count, 1)

    @property
    def top5(self) -> float:
        return float(self.top5_correct) / max(self.count, 1)

    @property
    def loss(self) -> float:
        return float(self.loss_sum) / max(self.count, 1)

    def per_class_accuracy(self) -> list[float | None]:
        totals = self.confusion.sum(dim=1)
        return [float(self.confusion[i, i]) / int(t) if t > 0 else None for i, t in enumerate(totals)]

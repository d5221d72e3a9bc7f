"""Checking an exported file against the PyTorch model it came from, on real images."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# the least top-1 agreement with PyTorch an export must reach before it is kept
MIN_AGREEMENT = {"none": 0.999, "fp16": 0.99, "dynamic": 0.98, "int8": 0.98}


class VerificationFailed(ValueError):
    pass


@dataclass
class Verification:
    count: int  # images compared
    agreement: float  # share of images whose top-1 class equals PyTorch's
    accuracy: float  # the exported file's top-1 accuracy
    reference_accuracy: float  # PyTorch's, on the same images
    max_logit_diff: float  # largest |logit - PyTorch logit| (int8 outputs dequantized)
    min_agreement: float

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"top-1 agreement with PyTorch {self.agreement:.2%} (min {self.min_agreement:.1%}), "
            f"accuracy {self.accuracy:.2%} (PyTorch {self.reference_accuracy:.2%}), "
            f"max logit diff {self.max_logit_diff:.3g}, {self.count} images"
        )


def compare(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray, min_agreement: float) -> Verification:
    if not np.isfinite(logits).all():
        # the keras.io example's own conversion path produced exactly this: a file that runs and outputs NaN
        return Verification(len(labels), 0.0, 0.0, _accuracy(reference, labels), float("inf"), min_agreement)
    return Verification(
        count=len(labels),
        agreement=float((logits.argmax(1) == reference.argmax(1)).mean()),
        accuracy=_accuracy(logits, labels),
        reference_accuracy=_accuracy(reference, labels),
        max_logit_diff=float(np.abs(logits - reference).max()),
        min_agreement=min_agreement,
    )


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())

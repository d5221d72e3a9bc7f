"""Classify image files with a checkpoint: ``vitkit predict``, and the ``Classifier`` a server holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitkit.data.images import list_images, load_eval_pixels
from vitkit.inference.runtime import load_for_inference, memory_format, pick_device
from vitkit.preprocess import normalize


class Classifier:
    """A checkpoint loaded once for inference: image files or evaluation pixels in, probabilities out."""

    def __init__(self, checkpoint: str | Path, device: str = "auto"):
        self.device = pick_device(device)
        self.model, self.meta = load_for_inference(checkpoint, self.device)
        self.preprocess = self.model.preprocess
        self.class_names: list[str] = self.meta["class_names"]

    def pixels(self, path: str | Path) -> torch.Tensor | None:
        """An image file -> its uint8 [3, S, S] evaluation pixels, or None if it cannot be read."""
        return load_eval_pixels(path, self.preprocess)

    @torch.no_grad()
    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] evaluation pixels -> [B, classes] probabilities."""
        x = normalize(pixels.to(self.device), self.preprocess, memory_format(self.model))
        return self.model(x).float().softmax(dim=1).cpu()


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class name, probability), best first
    error: str | None = None


def expand_inputs(inputs: str | Path | list[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images; one path alone is a list of one."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += list_images(item)
        elif item.exists():
            paths.append(item)
        else:
            raise FileNotFoundError(f"{item} does not exist; give image files or folders of images.")
    if not paths:
        raise ValueError("No images found in the given folders.")
    return paths


def predict(
    checkpoint: str | Path,
    inputs: str | Path | list[str | Path],
    top_k: int = 5,
    batch_size: int = 64,
    device: str = "auto",
) -> list[Prediction]:
    """Class probabilities for each image (a file, a folder, or a list of them); an unreadable file gets an
    ``error`` instead of stopping the rest."""
    if top_k < 1 or batch_size < 1:
        raise ValueError(f"top_k and batch_size must be 1 or more, not {top_k} and {batch_size}.")
    classifier = Classifier(checkpoint, device)
    names = classifier.class_names
    k = min(top_k, len(names))
    paths = expand_inputs(inputs)
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        pixels = [classifier.pixels(p) for p in chunk]
        good = [x for x in pixels if x is not None]
        probs = iter(classifier.probabilities(torch.stack(good)) if good else [])
        for path, x in zip(chunk, pixels):
            if x is None:
                results.append(Prediction(str(path), error="unreadable image"))
                continue
            values, indices = next(probs).topk(k)
            results.append(
                Prediction(str(path), [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())])
            )
    return results

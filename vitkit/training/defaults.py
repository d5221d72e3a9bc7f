"""Defaults that fit the data: the input size, horizontal flips, and the training zoom, each chosen by a
rule the README states, printed when a run starts, and overridden by its option.

- **Input size** (``--image-size``): twice the images' typical shorter side (their median, read from the
  file headers), at least 64 and at most the model's own size, rounded up to the model's input multiple
  (32 for MobileViT, the patch for ViT). 8x8 digits train at 64, 28x28 Fashion-MNIST at 64, photos at the
  model's 256 or 224. With ``--pretrained`` weights, the model's own size.
- **Flips** (``--hflip``): on for colour images, off when nine in ten images are grayscale (digits, letters,
  scans, X-rays: the kinds of image where a mirror image can mean another class).
- **Training zoom** (``--train-resize``): 1 / crop_pct, so the random crops of ``resize-crop-flip`` are at
  the scale of evaluation's centre crop.
"""

from __future__ import annotations

import dataclasses
import math

from vitkit.data.sources import DataListing
from vitkit.models.registry import ModelSpec
from vitkit.preprocess import Preprocess
from vitkit.training.config import TrainConfig

MIN_AUTO_SIZE = 64


def auto_image_size(native_side: int, model_size: int, multiple: int) -> int:
    """Twice ``native_side``, within [64, model_size], rounded up to ``multiple``."""
    side = min(max(2 * native_side, MIN_AUTO_SIZE), model_size) if native_side else model_size
    return math.ceil(side / multiple) * multiple


def resolve_preprocess(cfg: TrainConfig, spec: ModelSpec, listing: DataListing) -> tuple[Preprocess, str]:
    """The run's preprocessing, resolved once: the model's, then each option given; and how the size was chosen."""
    size = cfg.image_size or cfg.model_args.get("image_size")
    if size:
        why = "as given"
    elif cfg.pretrained:
        size, why = spec.config.image_size, "the size of the pretrained weights"
    else:
        size = auto_image_size(listing.native_side, spec.config.image_size, spec.model_cls.input_multiple(spec.config))
        why = (
            f"the images of {listing.name} are about {listing.native_side} px: twice that, at least {MIN_AUTO_SIZE}, "
            f"at most {spec.name}'s {spec.config.image_size}; --image-size to choose"
        )
    given = {k: getattr(cfg, k) for k in ("crop_pct", "interpolation", "resize_mode", "mean", "std")}
    preprocess = dataclasses.replace(
        spec.preprocess, input_size=size, **{k: v for k, v in given.items() if v is not None}
    )
    return preprocess, why


def resolve_hflip(cfg: TrainConfig, listing: DataListing) -> tuple[bool, str]:
    if cfg.hflip is not None:
        return cfg.hflip, "as given"
    if listing.grayscale:
        return False, "the images are grayscale, where a mirror image can be another class; --hflip true to flip"
    return True, "colour images; --hflip false if a mirror image can be another class"


def train_side(cfg: TrainConfig, preprocess: Preprocess) -> int:
    """The side ``resize-crop-flip`` resizes to before its random crop: evaluation's resize by default."""
    if cfg.train_resize is None:
        return preprocess.resize_size
    return max(preprocess.input_size, round(preprocess.input_size * cfg.train_resize))

"""Decode image files of any size and mode into RGB uint8, skipping (and counting) what cannot be read."""

from __future__ import annotations

import io
import math
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch

from vitkit.preprocess import Preprocess, center_crop, eval_pixels

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def list_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively, by extension), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def to_rgb(image) -> "PIL.Image.Image":  # noqa: F821
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) -> RGB; transparency is composited on white."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float grayscale: rescale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = Image.fromarray(((array - lo) * scale).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


class PackedImage(NamedTuple):
    """An image stored inside a tar shard of a ``vitkit pack`` folder: its bytes are ``size`` bytes at
    ``offset`` (the index records both, so no tar header is parsed). Picklable, for decoding workers."""

    shard: str
    offset: int
    size: int
    key: str

    def read(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def __str__(self) -> str:
        return f"{self.shard}:{self.key}"


class UnreadableImage(ValueError):
    """The bytes are not an image Pillow can decode (truncated, empty, another format, unsupported codec)."""


class ImageTooLarge(ValueError):
    """The image's header declares more pixels than allowed (a decompression bomb is refused before decoding)."""


# Pillow's JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale in the DCT, several times faster than a full decode
# followed by a resize. It is used only while the decoded side stays at least DRAFT_MARGIN times the side the
# image is resized to next, so the antialiased resize that follows still does the final filtering.
DRAFT_MARGIN = 2


def read_image(
    source: str | os.PathLike | bytes | PackedImage, min_side: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode a file or encoded bytes into an [H, W, 3] uint8 RGB array, upright (EXIF orientation applied).

    ``min_side``: the side the caller resizes the image's shorter side to next; a JPEG much larger than that
    is decoded at a reduced scale (draft mode) whose shorter side stays at least ``DRAFT_MARGIN * min_side``.
    ``max_pixels``: refuse (``ImageTooLarge``) an image whose header declares more pixels, before decoding.
    Raises ``UnreadableImage`` for anything Pillow cannot decode.
    """
    from PIL import Image, ImageOps

    if isinstance(source, PackedImage):
        source = source.read()
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF or palette data; a bad file is caught below
            with Image.open(stream) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageTooLarge(f"{width}x{height} pixels, more than the {max_pixels:,} allowed")
                if min_side and image.format == "JPEG" and min(width, height) > 2 * DRAFT_MARGIN * min_side:
                    scale = DRAFT_MARGIN * min_side / min(width, height)
                    image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
                image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
                array = np.asarray(to_rgb(image), dtype=np.uint8)
    except ImageTooLarge:
        raise
    except Exception as e:  # truncated, zero bytes, not an image, unsupported codec: all mean "unreadable"
        raise UnreadableImage(f"not an image Pillow can decode ({type(e).__name__})") from None
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise UnreadableImage("an image without pixels")
    return array


def decode_image(path: str | os.PathLike, min_side: int | None = None) -> np.ndarray | None:
    """``read_image`` for data sets: None instead of an error, so a bad file is skipped and counted."""
    try:
        return read_image(path, min_side)
    except (UnreadableImage, ImageTooLarge):
        return None


def as_batch(array: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, H, W] uint8 tensor (contiguous: resampling kernels differ in the last bit
    between memory orders, and every path must compute the same pixels)."""
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].contiguous()


def eval_array(array: np.ndarray, p: Preprocess) -> torch.Tensor:
    """A decoded [H, W, 3] uint8 image -> the uint8 [3, S, S] pixels the model evaluates."""
    return eval_pixels(as_batch(array), p)[0]


def eval_image(source: str | os.PathLike | bytes, p: Preprocess, max_pixels: int | None = None) -> torch.Tensor:
    """A file or encoded bytes -> the uint8 [3, S, S] pixels the model evaluates (``preprocess.eval_pixels``).
    The one path from an image to a model's input: ``vitkit predict``, evaluation and the server all take it
    (the server runs its two halves, ``read_image`` and ``eval_array``, on different threads).
    Raises ``UnreadableImage`` or ``ImageTooLarge``."""
    return eval_array(read_image(source, p.resize_size, max_pixels), p)


def load_eval_pixels(path: str | os.PathLike, p: Preprocess) -> torch.Tensor | None:
    """``eval_image`` for data sets: None for an unreadable file."""
    try:
        return eval_image(path, p)
    except (UnreadableImage, ImageTooLarge):
        return None


def load_square(path: str | os.PathLike, side: int, p: Preprocess) -> torch.Tensor | None:
    """An image file -> uint8 [3, side, side] made square the way ``p`` says, for training's augmentation."""
    array = decode_image(path, side)
    if array is None:
        return None
    return square_uint8(array, side, p.resize_mode, p.interpolation)


def square_uint8(array: np.ndarray, side: int, mode: str = "shorter", interpolation: str = "bilinear") -> torch.Tensor:
    """[H, W, 3] uint8 -> uint8 [3, side, side] as ``resize_square`` makes it, resampled in uint8 and
    channels-last: PyTorch's vectorised uint8 kernel for antialiased resizing is about 4x faster than resizing
    in float on one core, which makes it the cheap half of a streaming worker's work (decoding is the rest).
    Within a grey level of the float path (three for bicubic's overshoot); training's augmentation resamples
    these pixels again anyway.
    Evaluation keeps ``eval_pixels`` (float), the pixels exported models are checked against."""
    if not (array.flags.writeable and array.flags.c_contiguous):  # Pillow's arrays are read-only
        array = array.copy()
    x = torch.from_numpy(array).permute(2, 0, 1)[None]  # [H, W, 3] -> [1, 3, H, W], a channels-last view
    H, W = x.shape[-2:]
    if mode == "squash" or H == W:
        size = (side, side)
    else:  # the longer side in proportion, truncated as resize_square (and torchvision's Resize(int)) does
        size = (side, int(side * W / H)) if H < W else (int(side * H / W), side)
    if tuple(x.shape[-2:]) != size:
        if interpolation == "nearest":
            x = torch.nn.functional.interpolate(x, size=size, mode="nearest-exact")
        else:
            x = torch.nn.functional.interpolate(x, size=size, mode=interpolation, antialias=True)
    return center_crop(x, side)[0].contiguous()


def probe_images(paths: list[str], limit: int = 256) -> tuple[int, float]:
    """(median shorter side, share of grayscale files) over up to ``limit`` files spread across ``paths``,
    from their headers only (nothing is decoded)."""
    from PIL import Image

    step = max(1, len(paths) // limit)
    sides, gray = [], 0
    for path in paths[::step][:limit]:
        try:
            with Image.open(io.BytesIO(path.read()) if isinstance(path, PackedImage) else path) as image:
                sides.append(min(image.size))
                gray += image.mode in GRAY_MODES
        except Exception:
            continue  # unreadable: counted when the file is decoded
    return (int(np.median(sides)) if sides else 0), gray / max(len(sides), 1)


@dataclass
class DecodeReport:
    total: int = 0
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.skipped:
            return f"{self.total} images decoded"
        shown = ", ".join(Path(str(p)).name for p in self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else "")
        return (
            f"{self.total - len(self.skipped)} images decoded, {len(self.skipped)} unreadable files skipped ({shown})"
        )


def _decode_chunk(args: tuple[list[str], Callable]) -> list[torch.Tensor | None]:
    paths, load = args
    torch.set_num_threads(1)  # one process per core already
    return [load(p) for p in paths]


def decode_chunks(
    paths: list, load: Callable[[str], torch.Tensor | None], workers: int = 0, desc: str = "decoding images"
) -> Iterator[list[torch.Tensor | None]]:
    """Run ``load`` (file -> uint8 [3, S, S] or None) over ``paths`` in parallel, yielding the results chunk by
    chunk in the order of ``paths``, so a caller can write them out without holding them all.

    ``load`` is a module-level function or a ``functools.partial`` of one, so worker processes can take it.
    """
    workers = workers if workers > 0 else min(8, os.cpu_count() or 1)
    chunk = max(1, min(64, len(paths) // (workers * 4) or 1))
    jobs = [(paths[i : i + chunk], load) for i in range(0, len(paths), chunk)]
    if workers > 1 and len(paths) > 64:
        from vitkit.progress import progress

        with ProcessPoolExecutor(workers) as pool:
            yield from progress(pool.map(_decode_chunk, jobs), total=len(jobs), desc=desc, unit="chunk")
    else:
        for job in jobs:
            yield [load(p) for p in job[0]]


def decode_files(
    paths: list[str], load: Callable[[str], torch.Tensor | None], workers: int = 0
) -> tuple[torch.Tensor, np.ndarray, DecodeReport]:
    """``decode_chunks`` into one [N, 3, S, S] tensor: the readable images, the indices (into ``paths``) they
    came from, and a report of the rest."""
    images = [a for part in decode_chunks(paths, load, workers) for a in part]
    report = DecodeReport(total=len(paths), skipped=[p for p, a in zip(paths, images) if a is None])
    kept = np.array([i for i, a in enumerate(images) if a is not None], dtype=np.int64)
    stacked = torch.stack([images[i] for i in kept]) if len(kept) else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
    return stacked, kept, report

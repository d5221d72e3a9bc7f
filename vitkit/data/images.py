"""Decode image files of any size and mode into RGB uint8, skipping (and counting) what cannot be read."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


def decode_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray | None:
    """An [H, W, 3] uint8 array, resized (squashed) to ``size`` x ``size`` when given; None if unreadable."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF or palette data; a bad file is caught below
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
                image = to_rgb(image)
                if size is not None and image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
                array = np.asarray(image, dtype=np.uint8)
    except Exception:  # truncated, zero bytes, not an image, unsupported codec: all mean "skip it"
        return None
    return array if array.ndim == 3 and array.shape[2] == 3 and array.size > 0 else None


@dataclass
class DecodeReport:
    total: int = 0
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.skipped:
            return f"{self.total} images decoded"
        shown = ", ".join(Path(p).name for p in self.skipped[:3]) + (" ..." if len(self.skipped) > 3 else "")
        return (
            f"{self.total - len(self.skipped)} images decoded, {len(self.skipped)} unreadable files skipped ({shown})"
        )


def _decode_chunk(args: tuple[list[str], int]) -> list[np.ndarray | None]:
    paths, size = args
    return [decode_image(p, size) for p in paths]


def decode_files(paths: list[str], size: int, workers: int = 0) -> tuple[np.ndarray, np.ndarray, DecodeReport]:
    """Decode ``paths`` in parallel into one [N, size, size, 3] uint8 array.

    Returns the array of the readable images, the indices (into ``paths``) they came from, and a report.
    """
    workers = workers if workers > 0 else min(8, os.cpu_count() or 1)
    chunk = max(1, min(64, len(paths) // (workers * 4) or 1))
    jobs = [(paths[i : i + chunk], size) for i in range(0, len(paths), chunk)]
    if workers > 1 and len(paths) > 64:
        from tqdm import tqdm

        with ProcessPoolExecutor(workers) as pool:
            results = list(
                tqdm(
                    pool.map(_decode_chunk, jobs),
                    total=len(jobs),
                    desc="decoding images",
                    unit="chunk",
                    leave=False,
                    disable=None,
                )
            )
    else:
        results = [_decode_chunk(job) for job in jobs]
    arrays = [a for part in results for a in part]
    report = DecodeReport(total=len(paths), skipped=[p for p, a in zip(paths, arrays) if a is None])
    kept = np.array([i for i, a in enumerate(arrays) if a is not None], dtype=np.int64)
    images = np.stack([arrays[i] for i in kept]) if len(kept) else np.zeros((0, size, size, 3), np.uint8)
    return images, kept, report

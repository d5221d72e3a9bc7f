"""Small files in the real formats, generated for the tests (no network, no shipped data)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes, gzipped, as Fashion-MNIST ships."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_mnist(folder: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def make_cifar10(folder: Path, per_batch: int = 20, batches: int = 2, seed: int = 0) -> None:
    """cifar-10-batches-py: pickled dicts with bytes keys, data as [N, 3072] uint8 (R plane, G, B)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i + 1}" for i in range(batches)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(per_batch)], b"data": data,
                 b"filenames": [f"{i}.png".encode() for i in range(per_batch)]}  # fmt: skip
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


def image_bytes(mode: str, size=(40, 30), fmt: str = "PNG", color=None) -> bytes:
    rng = np.random.default_rng(hash((mode, size)) % 2**32)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    elif mode == "P":
        image = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert("P")
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4, "LA": 2}[mode]
        array = (
            rng.integers(0, 255, (*size[::-1], channels), dtype=np.uint8)
            if color is None
            else np.full((*size[::-1], channels), color, np.uint8)
        )
        image = Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode=mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def make_image_folder(root: Path, classes=("cats", "dogs"), per_class: int = 12, broken: bool = True) -> dict:
    """root/<class>/*.jpg|png in many modes; with ``broken``, three unreadable files. Returns what was written."""
    written = {"good": 0, "broken": 0}
    modes = [("RGB", "JPEG", ".jpg"), ("L", "PNG", ".png"), ("RGBA", "PNG", ".png"), ("P", "PNG", ".png"),
             ("CMYK", "JPEG", ".jpg"), ("I;16", "PNG", ".png"), ("LA", "PNG", ".png")]  # fmt: skip
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode, fmt, ext = modes[i % len(modes)]
            size = (24 + 7 * i, 20 + 5 * c)  # every size and aspect differs
            (folder / f"{name}_{i}{ext}").write_bytes(image_bytes(mode, size, fmt))
            written["good"] += 1
    if broken:
        first = root / classes[0]
        (first / "truncated.jpg").write_bytes(image_bytes("RGB", (64, 64), "JPEG")[:200])
        (first / "empty.png").write_bytes(b"")
        (first / "notes.jpg").write_text("this is not an image")
        written["broken"] = 3
    return written

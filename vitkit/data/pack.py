"""``vitkit pack``: a class-per-folder tree of images -> WebDataset-compatible tar shards plus an index.

A pack folder holds, for each split (``train`` and ``val`` when the source has them, else ``all``):

- ``SPLIT-000000.tar``, ... : ``KEY.jpg`` (the image, decoded, shrunk to ``max_side``, re-encoded) and
  ``KEY.cls`` (its class index as text), WebDataset's convention, so the ``webdataset`` library reads them;
- ``SPLIT-000000.json``: that shard's manifest (keys, labels, byte offsets and sizes, files skipped);
- ``SPLIT.index.npz``: shard, offset, size and label of every image, numpy arrays for random access with no
  tar parsing;

and ``pack.json`` (classes, counts per split and class, options, unreadable files), written last: a folder
without it is an unfinished pack. Every shard is written to temporary files and renamed with its manifest
once complete, so an interrupted pack leaves only whole shards, and running it again continues after them.
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitkit.errors import OptionError
from vitkit.utils import atomic_paths, atomic_write_text, check_writable

FORMAT = "vitkit-pack/1"
HEADER = 512  # a ustar member header; keys are short, so no long-name or pax header precedes one


@dataclass
class PackResult:
    folder: Path
    counts: dict[str, int]  # images packed per split
    skipped: list[tuple[str, str]]  # (file, why)
    reused_shards: int
    seconds: float


def is_pack(folder: str | Path) -> bool:
    return (Path(folder) / "pack.json").is_file()


def pack(
    source: str | Path,
    out: str | Path,
    max_side: int = 512,
    quality: int = 90,
    shard_images: int = 1000,
    workers: int = 0,
    log=print,
) -> PackResult:
    """Pack the image folder ``source`` into ``out``; an unfinished pack with the same options is continued."""
    from vitkit.data.sources import split_folders

    for name, value, low, high in (("max_side", max_side, 16, 16384), ("quality", quality, 1, 100),
                                   ("shard_images", shard_images, 1, 10**7), ("workers", workers, 0, 256)):  # fmt: skip
        if not low <= value <= high:  # named as the caller named it: --max-side on the command line
            raise OptionError(name, f"must be from {low} to {high}, not {value}.")
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise FileNotFoundError(f"Image folder {source} does not exist; give a folder of class sub-folders.")
    check_writable(out / "pack.json")
    if is_pack(out):
        raise ValueError(f"{out} already holds a finished pack; choose another folder or remove it.")
    classes, splits = split_folders(source)  # {split: (paths, labels)}
    options = {"source": str(source.resolve()), "max_side": max_side, "quality": quality, "shard_images": shard_images}
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    encode = functools.partial(encode_image, max_side=max_side, quality=quality)
    counts, per_class, skipped, reused = {}, {}, [], 0
    for split, (paths, labels) in splits.items():
        manifests = []
        for k, first in enumerate(range(0, len(paths), shard_images)):
            name = f"{split}-{k:06d}"
            manifest = _finished_shard(out, name, options)
            if manifest is None:
                chunk = range(first, min(first + shard_images, len(paths)))
                log(f"{split}: shard {k + 1} of {-(-len(paths) // shard_images)} ({len(chunk)} images)")
                encoded = _encode_all([paths[i] for i in chunk], encode, workers)
                manifest = _write_shard(out, name, options, chunk, encoded, paths, labels)
            else:
                reused += 1
            manifests.append(manifest)
            skipped += [tuple(s) for s in manifest["skipped"]]
        labels_packed = _write_index(out, split, manifests)
        counts[split] = len(labels_packed)
        per_class[split] = np.bincount(labels_packed, minlength=len(classes)).tolist()
    record = {"format": FORMAT, "classes": classes, "splits": {s: {"count": counts[s], "per_class": per_class[s],
              "shards": sorted(p.name for p in out.glob(f"{s}-*.tar"))} for s in splits},
              "options": options, "skipped": [list(s) for s in skipped]}  # fmt: skip
    atomic_write_text(out / "pack.json", json.dumps(record, indent=1))
    return PackResult(out, counts, skipped, reused, round(time.perf_counter() - start, 1))


def encode_image(path: str, max_side: int, quality: int) -> bytes | str:
    """Decode ``path`` fully, shrink its longer side to ``max_side``, encode as JPEG: the bytes, or why the file
    is unreadable."""
    from PIL import Image

    from vitkit.data.images import ImageTooLarge, UnreadableImage, read_image

    try:
        array = read_image(path)  # the whole image, EXIF orientation applied: a truncated file fails here
    except (UnreadableImage, ImageTooLarge, OSError) as e:
        return str(e) or type(e).__name__
    image = Image.fromarray(array)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _encode_all(paths: list[str], encode, workers: int) -> list[bytes | str]:
    import os

    workers = workers if workers > 0 else min(8, os.cpu_count() or 1)
    if workers == 1 or len(paths) < 32:
        return [encode(p) for p in paths]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(encode, paths, chunksize=16))


def _write_shard(out: Path, name: str, options: dict, chunk: range, encoded: list, paths, labels) -> dict:
    """The tar and its manifest, renamed together once both are complete (the manifest last)."""
    keys, shard_labels, offsets, sizes, skipped = [], [], [], [], []
    with atomic_paths(out / f"{name}.tar", out / f"{name}.json") as (tar_tmp, manifest_tmp):
        with tarfile.open(tar_tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i, data in zip(chunk, encoded):
                if isinstance(data, str):
                    skipped.append((paths[i], data))
                    continue
                key = f"{i:09d}"
                label = int(labels[i])
                offsets.append(tar.offset + HEADER)  # where the JPEG's bytes start
                _add(tar, f"{key}.jpg", data)
                _add(tar, f"{key}.cls", str(label).encode())
                keys.append(key)
                shard_labels.append(label)
                sizes.append(len(data))
        manifest = {"format": FORMAT, "options": options, "keys": keys, "labels": shard_labels,
                    "offsets": offsets, "sizes": sizes, "skipped": skipped}  # fmt: skip
        manifest_tmp.write_text(json.dumps(manifest))
    return manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _finished_shard(out: Path, name: str, options: dict) -> dict | None:
    """The manifest of a shard a previous run completed, if that run had the same options."""
    path = out / f"{name}.json"
    if not (path.is_file() and (out / f"{name}.tar").is_file()):
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("options") != options:
        raise ValueError(
            f"{out} holds shards packed with other options ({manifest.get('options')}); "
            "choose another folder or remove it."
        )
    return manifest


def _write_index(out: Path, split: str, manifests: list[dict]) -> np.ndarray:
    """SPLIT.index.npz from the shards' manifests; returns the labels it holds."""
    manifests = manifests or [{"keys": [], "offsets": [], "sizes": [], "labels": []}]  # an empty split
    shard = np.concatenate([np.full(len(m["keys"]), i, dtype=np.int32) for i, m in enumerate(manifests)])
    with atomic_paths(out / f"{split}.index.npz") as (tmp,):
        with open(tmp, "wb") as f:
            np.savez(
                f,
                shard=shard,
                offset=np.concatenate([np.asarray(m["offsets"], dtype=np.int64) for m in manifests]),
                size=np.concatenate([np.asarray(m["sizes"], dtype=np.int64) for m in manifests]),
                label=(labels := np.concatenate([np.asarray(m["labels"], dtype=np.int64) for m in manifests])),
                key=np.concatenate([np.asarray(m["keys"], dtype="U9") for m in manifests]),
            )
    return labels


def read_pack(folder: str | Path) -> tuple[list[str], dict[str, tuple[list, np.ndarray]]]:
    """(class names, {split: (PackedImage per image, labels)}) of a finished pack."""
    from vitkit.data.images import PackedImage

    folder = Path(folder)
    record = json.loads((folder / "pack.json").read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{folder}/pack.json is not a vitkit pack (format {record.get('format')!r}).")
    splits = {}
    for split, info in record["splits"].items():
        index = np.load(folder / f"{split}.index.npz")
        shards = [str(folder / name) for name in info["shards"]]
        images = [
            PackedImage(shards[s], int(o), int(n), str(k))
            for s, o, n, k in zip(index["shard"], index["offset"], index["size"], index["key"])
        ]
        splits[split] = (images, index["label"])
    return record["classes"], splits

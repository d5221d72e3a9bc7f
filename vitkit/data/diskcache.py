"""Decoded images cached on local disk: one uint8 file per split, memory-mapped, for sets over the memory budget.

The first run decodes every file once, at the size training or evaluation stores it, into
``<cache>/decoded/<key>/images.u8`` ([N, 3, S, S] uint8, row-major); later runs, and every torchrun rank of the
machine, map that file instead of decoding again. The operating system's page cache holds the pages once for
all processes of a node, and evicts them when memory is short, so a set larger than memory still trains (at
disk speed for what is not cached).

The key is a digest of the file list (path, size and modification time of each file or pack shard), of how
the images are made square, and of the versions of the pixel code, PyTorch and Pillow, so a changed folder,
another image size or an upgrade gets its own entry. The entry is written
under a lock by one process while the others wait, atomically (images first, then ``meta.json``), so a killed
build leaves no entry that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from vitkit.data.images import DecodeReport, PackedImage, decode_chunks
from vitkit.utils import atomic_paths

FORMAT = 2  # bump when the layout of an entry, or the code that makes its pixels (load_square, eval_pixels), changes


def cache_root() -> Path:
    from vitkit.data.download import cache_dir

    return cache_dir() / "decoded"


def decoded_bytes(count: int, side: int) -> int:
    return count * 3 * side * side


def has_room(folder: Path, needed: int) -> bool:
    """True when ``needed`` bytes take at most half the free space of the disk ``folder`` is on."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return needed <= shutil.disk_usage(probe).free // 2


def entry_key(paths: list, side: int, how: str) -> str:
    """Digest of what the entry is made from: each file's (or pack shard's) path, size and mtime, and ``how``."""
    import PIL

    # the libraries that decode and resample are part of what the pixels are
    digest = hashlib.sha256(f"{FORMAT} {side} {how} torch {torch.__version__} Pillow {PIL.__version__}\n".encode())
    stats: dict[str, str] = {}
    for path in paths:
        file = path.shard if isinstance(path, PackedImage) else str(path)
        if file not in stats:
            try:
                st = os.stat(file)
                stats[file] = f"{st.st_size} {st.st_mtime_ns}"
            except OSError:
                stats[file] = "missing"
        digest.update(f"{path}\t{stats[file]}\n".encode())
    return digest.hexdigest()[:24]


def entry_folder(paths: list, side: int, how: str, root: Path | None = None) -> Path:
    """Where the entry for these files lives, built or not."""
    return (root or cache_root()) / entry_key(paths, side, how)


def cached_images(
    paths: list, load: Callable, side: int, folder: Path, workers: int = 0
) -> tuple[torch.Tensor, np.ndarray, DecodeReport]:
    """``decode_files`` through the disk cache entry ``folder`` (``entry_folder``): the readable images as a
    [N, 3, side, side] uint8 tensor mapped from disk (pages shared by every process that maps them), the
    indices into ``paths`` they came from, and the report of the unreadable files. Builds the entry on a miss."""
    with _lock(folder):
        if not (folder / "meta.json").is_file():
            _build(folder, paths, load, side, workers)
    meta = json.loads((folder / "meta.json").read_text())
    kept = np.load(folder / "kept.npy")
    report = DecodeReport(total=len(paths), skipped=[str(paths[i]) for i in meta["skipped"]])
    if not len(kept):
        return torch.zeros(0, 3, side, side, dtype=torch.uint8), kept, report
    # mode "c": copy-on-write pages, so torch gets a writable array without copying the file into memory
    array = np.memmap(folder / "images.u8", dtype=np.uint8, mode="c", shape=(len(kept), 3, side, side))
    return torch.from_numpy(array), kept, report


def _build(folder: Path, paths: list, load: Callable, side: int, workers: int) -> None:
    row = decoded_bytes(1, side)
    kept, skipped = [], []
    with atomic_paths(folder / "images.u8", folder / "kept.npy", folder / "meta.json") as (images, index, meta):
        chunks = decode_chunks(paths, load, workers, desc=f"decoding into the disk cache {folder}")
        # closing: on an error the pool's workers (which inherited the lock's descriptor) end before the lock does
        with open(images, "r+b") as out, contextlib.closing(chunks):
            for part in chunks:
                for image in part:
                    i = len(kept) + len(skipped)
                    if image is None:
                        skipped.append(i)
                        continue
                    if image.shape != (3, side, side):  # a loader that breaks the entry's layout: never store it
                        raise ValueError(f"{paths[i]} decoded to {tuple(image.shape)}, not (3, {side}, {side}).")
                    out.write(image.contiguous().numpy().tobytes())
                    kept.append(i)
            out.flush()
            os.fsync(out.fileno())
        assert os.path.getsize(images) == row * len(kept)
        with open(index, "wb") as f:
            np.save(f, np.array(kept, dtype=np.int64))
        meta.write_text(json.dumps({"format": FORMAT, "side": side, "count": len(kept), "skipped": skipped}))


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One process builds an entry; the others (torchrun ranks, a second run) wait, then map it. Temporary
    files found under the lock were left by a process that was killed, and are removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "a")
    except OSError as e:
        raise OSError(
            e.errno, f"cannot write the decoded-image cache ({e.strerror}); set VITKIT_CACHE to another folder"
        ) from None
    with lock:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "meta.json").is_file():
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        yield

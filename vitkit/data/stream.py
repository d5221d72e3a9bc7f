"""Training images read lazily, batch by batch, for sets larger than the memory budget.

Worker processes (PyTorch's DataLoader) decode each file (Pillow's draft mode for JPEGs far larger than the
training side), make it square at the training side as the in-memory path does, and hand back uint8 batches;
augmentation and normalisation stay on the training device, as for sets held in memory. A file that cannot be
read is left out of its batch and reported, so every run meets the same bad files at the same steps.

The file list lives in a ``FileTable``: numpy arrays, not a million Python strings, so a worker process adds
little memory when it touches the index (copy-on-write pages stay shared).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from vitkit.data.images import PackedImage, load_square
from vitkit.preprocess import Preprocess


class FileTable:
    """``N`` image references (paths, or images inside pack shards) held in a few numpy arrays."""

    def __init__(self, sources: list):
        if sources and isinstance(sources[0], PackedImage):
            self.shards = sorted({s.shard for s in sources})
            shard_id = {name: i for i, name in enumerate(self.shards)}
            self.shard = np.array([shard_id[s.shard] for s in sources], dtype=np.int32)
            self.offset = np.array([s.offset for s in sources], dtype=np.int64)
            self.size = np.array([s.size for s in sources], dtype=np.int64)
            names = [s.key for s in sources]
        else:
            self.shards = None
            names = [str(s) for s in sources]
        encoded = [n.encode() for n in names]
        self.text = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ends)

    def _name(self, i: int) -> str:
        start = int(self.ends[i - 1]) if i else 0
        return self.text[start : int(self.ends[i])].tobytes().decode()

    def __getitem__(self, i: int) -> str | PackedImage:
        if self.shards is None:
            return self._name(i)
        return PackedImage(self.shards[self.shard[i]], int(self.offset[i]), int(self.size[i]), self._name(i))


class StreamSet(torch.utils.data.Dataset):
    """A training split decoded when a batch asks for it: uint8 [3, side, side] per image, as ``load_square``."""

    def __init__(self, sources: list, labels: np.ndarray, side: int, p: Preprocess):
        self.files, self.labels = FileTable(sources), torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.side, self.preprocess = side, p

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int]:
        return load_square(self.files[i], self.side, self.preprocess), i

    def batches(self, batches: list[torch.Tensor], workers: int = 0, pin: bool = False) -> Iterator[Batch]:
        """The images of each batch of indices, in order, with the indices of those that were read."""
        loader = torch.utils.data.DataLoader(
            self,
            batch_sampler=[b.tolist() for b in batches],
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=pin,
            worker_init_fn=_one_thread,
            prefetch_factor=4 if workers else None,
            # the loader draws its workers' base seed from this, not from the global generator that dropout
            # draws from: streaming must not change the run's random numbers
            generator=torch.Generator().manual_seed(0),
        )
        for images, index, skipped in loader:
            yield Batch(images, index, [str(self.files[i]) for i in skipped])


class Batch:
    """uint8 images [b, 3, S, S], their indices [b] into the split, and the files left out as unreadable."""

    def __init__(self, images: torch.Tensor, index: torch.Tensor, skipped: list[str] | None = None):
        self.images, self.index, self.skipped = images, index, skipped or []

    def __iter__(self):
        return iter((self.images, self.index, self.skipped))


def _collate(items: list[tuple[torch.Tensor | None, int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    read = [(image, i) for image, i in items if image is not None]
    skipped = [i for image, i in items if image is None]
    if not read:
        return torch.zeros(0, 3, 1, 1, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), skipped
    return torch.stack([image for image, _ in read]), torch.tensor([i for _, i in read]), skipped


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # one decoding process per core already


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)

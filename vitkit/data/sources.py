"""``--data`` specs -> train and validation image sets with class names.

``digits`` | ``fashion-mnist[:PATH]`` | ``cifar10[:PATH]`` | ``flowers[:PATH]`` | ``folder:PATH`` | ``PATH``
"""

from __future__ import annotations

import functools
import gzip
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vitkit.data import download
from vitkit.data.pack import is_pack, read_pack
from vitkit.data.images import (
    DecodeReport,
    decode_files,
    decode_image,
    list_images,
    load_eval_pixels,
    load_square,
    probe_images,
)
from vitkit.data.diskcache import cache_root, cached_images, decoded_bytes, entry_folder, has_room
from vitkit.data.stream import Batch, StreamSet
from vitkit.preprocess import Preprocess, eval_pixels

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


@dataclass
class ImageSet:
    """Decoded images as one [N, 3, S, S] uint8 tensor in memory, with their labels."""

    images: torch.Tensor
    labels: torch.Tensor  # [N] int64

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batches: list[torch.Tensor], workers: int = 0, pin: bool = False) -> Iterator[Batch]:
        """The images of each batch of indices (the interface ``StreamSet`` shares); ``pin``: in page-locked
        memory, so the copy to a GPU overlaps the work before it."""
        for index in batches:
            images = self.images[index]
            yield Batch(images.pin_memory() if pin else images, index)


@dataclass
class Records:
    """One split before decoding: images held in memory at their own size (the array data sets) or files."""

    labels: np.ndarray  # [N] int64
    images: torch.Tensor | None = None  # [N, 3, H, W] uint8
    paths: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __add__(self, other: Records) -> Records:
        """Both splits as one (``vitkit eval --split all``)."""
        return Records(
            np.concatenate([self.labels, other.labels]),
            torch.cat([self.images, other.images]) if self.images is not None else None,
            self.paths + other.paths if self.paths is not None else None,
        )

    def relabel(self, index: np.ndarray) -> Records:
        """The same images with label ``l`` replaced by ``index[l]`` (a data set's classes -> a model's)."""
        return Records(index[self.labels], self.images, self.paths)

    def subset(self, index) -> Records:
        index = np.asarray(index, dtype=np.int64)
        return Records(
            self.labels[index],
            self.images[torch.from_numpy(index)] if self.images is not None else None,
            [self.paths[i] for i in index] if self.paths is not None else None,
        )


@dataclass
class DataListing:
    """What a ``--data`` spec names, before any image is decoded: the classes, the two splits, and what the
    images look like (their typical shorter side, whether they are grayscale), for choosing defaults."""

    name: str
    class_names: list[str]
    train: Records
    val: Records
    native_side: int
    grayscale: bool
    val_fraction: float | None = None  # the share held out by a seeded split; None: the data's own split


@dataclass
class DataSplits:
    """Decoded splits: ``train`` as stored for augmentation, ``val`` as the model evaluates it
    (``preprocess.eval_pixels``)."""

    name: str
    train: ImageSet | StreamSet
    val: ImageSet
    class_names: list[str]
    reports: list[DecodeReport] = field(default_factory=list)  # unreadable files skipped, per folder read
    where: str = "in memory"  # how the training images are held, and why

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        text = f"{self.name}: {len(self.train)} train / {len(self.val)} val images, {self.num_classes} classes"
        skipped = sum(len(r.skipped) for r in self.reports)
        return text + (f"; {skipped} unreadable files skipped" if skipped else "") + f"\n  training images {self.where}"


# the share a seeded split holds out when none is given: scikit-learn's digits have no test split, and 20%
# holds out about 360 images, so top-1 moves in steps of 0.3%; a folder of photos is usually larger
DIGITS_VAL_FRACTION = 0.2
FOLDER_VAL_FRACTION = 0.1


def list_data(spec: str, val_fraction: float | None = None, split_seed: int = 0) -> DataListing:
    """Resolve a ``--data`` spec to its classes and splits, decoding nothing (folders are only listed).

    ``val_fraction`` is the share a seeded split holds out (default 0.2 for digits, 0.1 for a folder); data
    with its own test or validation split (Fashion-MNIST, CIFAR-10, a folder with train/ and val/) keeps
    it, and the listing's ``val_fraction`` is then None."""
    kind, _, arg = spec.partition(":")
    if kind == "digits":
        return _digits(DIGITS_VAL_FRACTION if val_fraction is None else val_fraction, split_seed)
    if kind == "fashion-mnist":
        return _fashion_mnist(Path(arg) if arg else None)
    if kind == "cifar10":
        return _cifar10(Path(arg) if arg else None)
    if kind == "flowers":
        root = Path(arg) if arg else download.fetch("flowers")
        return list_folder(root, val_fraction, split_seed, name="flowers")
    if kind == "folder":
        return list_folder(Path(arg), val_fraction, split_seed)
    if Path(spec).exists() or "/" in spec or "\\" in spec:
        return list_folder(Path(spec), val_fraction, split_seed)
    raise ValueError(
        f"Unknown data '{spec}'; use digits, fashion-mnist[:PATH], cifar10[:PATH], flowers[:PATH], folder:PATH or a folder path."
    )


def eval_set(
    records: Records, p: Preprocess, workers: int = 0, on_disk: bool = False
) -> tuple[ImageSet, DecodeReport | None]:
    """The split as the model evaluates it: ``eval_pixels`` of every image (files decoded in parallel, into
    the disk cache with ``on_disk``)."""
    if records.images is not None:
        pixels = torch.cat([eval_pixels(chunk, p) for chunk in records.images.split(1024)])
        return ImageSet(pixels, torch.from_numpy(records.labels)), None
    entry = entry_folder(records.paths, p.input_size, _eval_how(p)) if on_disk else None
    return _decode(records, functools.partial(load_eval_pixels, p=p), workers, p.input_size, entry)


def train_set(
    records: Records, side: int, p: Preprocess, workers: int = 0, entry: Path | None = None
) -> tuple[ImageSet, DecodeReport | None]:
    """The split as stored for augmentation: arrays as they are, files made square at ``side`` the way ``p``
    says (the augmentation resizes and crops from there), into the disk cache ``entry`` when given."""
    if records.images is not None:
        return ImageSet(records.images, torch.from_numpy(records.labels)), None
    return _decode(records, functools.partial(load_square, side=side, p=p), workers, side, entry)


def _decode(records: Records, load, workers: int, side: int, entry: Path | None) -> tuple[ImageSet, DecodeReport]:
    """Files -> an ImageSet of those ``load`` could read, with their labels, and the report of the rest; held
    in memory, or mapped from the disk cache ``entry`` (built on a miss)."""
    if entry is None:
        images, kept, report = decode_files(records.paths, load, workers)
    else:
        images, kept, report = cached_images(records.paths, load, side, entry, workers)
    return ImageSet(images, torch.from_numpy(records.labels[kept])), report


def load_splits(
    listing: DataListing, p: Preprocess, train_side: int, workers: int = 0, cache: str = "auto",
    memory_budget: float | None = None,
) -> DataSplits:  # fmt: skip
    """Decode both splits of ``listing``: train for augmentation at ``train_side``, val as evaluated.

    Where files' decoded images are held (``cache``): ``memory``; ``disk``, a uint8 file per split in the disk
    cache, memory-mapped (``vitkit.data.diskcache``); ``stream``, the training files read by worker processes
    every epoch (``StreamSet``; validation in memory). ``auto`` takes memory when both splits fit in
    ``memory_budget`` GiB (default: half this machine's memory), else the disk cache when they take at most
    half its free space, else streaming. Array data sets are in memory already.
    """
    mode, where, folder = "memory", "in memory", None
    if listing.train.paths is not None:
        mode, where, folder = _choose_path(listing, p, train_side, cache, memory_budget)
    if mode == "stream":
        train, train_report = StreamSet(listing.train.paths, listing.train.labels, train_side, p), None
    else:
        train, train_report = train_set(listing.train, train_side, p, workers, folder)
    val, val_report = eval_set(listing.val, p, workers, on_disk=mode == "disk")
    if len(train) == 0:
        raise ValueError(f"No readable image in {listing.name}: all {train_report.total} files failed to decode.")
    reports = [r for r in (train_report, val_report) if r is not None]
    return DataSplits(listing.name, train, val, listing.class_names, reports, where)


def _choose_path(
    listing: DataListing, p: Preprocess, train_side: int, cache: str, memory_budget: float | None
) -> tuple[str, str, Path | None]:
    """(memory | disk | stream, the sentence saying where the training images live and why, the disk cache
    entry) for a listing of files."""
    needed = decoded_bytes(len(listing.train), train_side) + decoded_bytes(len(listing.val), p.input_size)
    budget = memory_budget * 2**30 if memory_budget is not None else _memory_bytes() // 2
    over, size = f"over the {budget / 2**30:.2g} GiB memory budget", f"{needed / 2**30:.2f} GiB decoded"
    if cache == "memory" or (cache == "auto" and needed <= budget):
        _check_fits_in_memory(len(listing.train) + len(listing.val), max(train_side, p.input_size), listing.name)
        return "memory", f"in memory ({size} once)", None
    if cache != "stream":
        folder = entry_folder(listing.train.paths, train_side, _train_how(p, train_side))
        # an entry an earlier run built is used whatever room is left now
        if cache == "disk" or (folder / "meta.json").is_file() or has_room(cache_root(), needed):
            return (
                "disk",
                f"mapped from the disk cache {folder} ({size}; {'--cache disk' if cache == 'disk' else over})",
                folder,
            )
    why = "streaming was asked for" if cache == "stream" else f"{over}, and over half the disk cache's free space"
    return "stream", f"read from the files every epoch ({size}; {why})", None


def _train_how(p: Preprocess, side: int) -> str:
    return f"train square {side} {p.resize_mode} {p.interpolation}"  # what load_square's pixels depend on


def _eval_how(p: Preprocess) -> str:
    return f"eval {p.input_size} {p.crop_pct} {p.resize_mode} {p.interpolation}"  # what eval_pixels' depend on


def _from_arrays(images: np.ndarray, labels: np.ndarray) -> Records:
    """[N, H, W] or [N, H, W, 3] uint8 -> Records holding [N, 3, H, W]."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor.unsqueeze(1).expand(-1, 3, -1, -1) if tensor.dim() == 3 else tensor.permute(0, 3, 1, 2)
    return Records(np.asarray(labels, dtype=np.int64), images=tensor.contiguous())


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: every class with 2+ images keeps at least one in each part."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(max(n_val, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _digits(val_fraction: float, split_seed: int) -> DataListing:
    from sklearn.datasets import load_digits

    digits = load_digits()  # 1,797 8x8 images with values 0..16, shipped inside scikit-learn
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    train_idx, val_idx = stratified_split(digits.target, val_fraction, split_seed)
    return DataListing(
        "digits",
        [str(i) for i in range(10)],
        _from_arrays(images[train_idx], digits.target[train_idx]),
        _from_arrays(images[val_idx], digits.target[val_idx]),
        native_side=8,
        grayscale=True,
        val_fraction=val_fraction,
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {array.size}.")
    return array.reshape(shape).copy()  # frombuffer is read-only


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has no {stem}(.gz); it should hold the four Fashion-MNIST IDX files.")


def _fashion_mnist(folder: Path | None) -> DataListing:
    if folder is None:
        if (FASHION_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
            folder = FASHION_SYSTEM_DIR
        else:
            folder = download.fetch("fashion-mnist")
    if not folder.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {folder} does not exist; give the folder of the IDX .gz files.")
    parts = {}
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {len(images)} {prefix} images but {len(labels)} labels.")
        parts[split] = _from_arrays(images, labels)
    return DataListing("fashion-mnist", FASHION_CLASSES, parts["train"], parts["val"], native_side=28, grayscale=True)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles: allow numpy arrays and nothing that could run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch ({e}).") from None
    return data.transpose(0, 2, 3, 1), labels  # -> [N, 32, 32, 3]


def _cifar10(folder: Path | None) -> DataListing:
    folder = folder or download.fetch("cifar10")
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    train_files = sorted(folder.glob("data_batch_*"))
    if not train_files or not (folder / "test_batch").is_file():
        raise FileNotFoundError(
            f"{folder} has no data_batch_* and test_batch files; give the cifar-10-batches-py folder."
        )
    train = [_read_cifar_batch(p) for p in train_files]
    test_images, test_labels = _read_cifar_batch(folder / "test_batch")
    return DataListing(
        "cifar10",
        CIFAR10_CLASSES,
        _from_arrays(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
        _from_arrays(test_images, test_labels),
        native_side=32,
        grayscale=False,
    )


def scan_class_folders(root: Path) -> tuple[list[str], list[str], list[int]]:
    """``root/<class>/**/<image>`` -> (class names, file paths, labels); folders without images are not classes."""
    classes, paths, labels = [], [], []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = list_images(folder)
        if files:
            paths += [str(p) for p in files]
            labels += [len(classes)] * len(files)
            classes.append(folder.name)
    return classes, paths, labels


def list_folder(
    root: Path, val_fraction: float | None = None, split_seed: int = 0, name: str | None = None
) -> DataListing:
    """A class-per-folder tree, with ``train/`` and ``val/`` (or ``test/``) sub-folders or a seeded split."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"Data folder {root} does not exist; check the path.")
    if not root.is_dir():
        raise ValueError(f"{root} is a file; give a folder laid out as {root}/<class>/<images>.")
    if is_pack(root):  # `vitkit pack` output: images inside tar shards, read through the index
        classes, splits = read_pack(root)
    else:
        classes, splits = split_folders(root)
    if "train" in splits:
        (train_paths, train_labels), (val_paths, val_labels) = splits["train"], splits["val"]
        val_fraction = None
    else:
        val_fraction = FOLDER_VAL_FRACTION if val_fraction is None else val_fraction
        paths, labels = splits["all"]
        train_idx, val_idx = stratified_split(np.array(labels), val_fraction, split_seed)
        train_paths, train_labels = [paths[i] for i in train_idx], [labels[i] for i in train_idx]
        val_paths, val_labels = [paths[i] for i in val_idx], [labels[i] for i in val_idx]
    # a pack's val split is held whole by every machine (--node-shards), so every machine probes the same files
    probed = val_paths if is_pack(root) and "train" in splits and val_paths else train_paths
    side, gray_share = probe_images(probed)
    return DataListing(
        name or root.name,
        classes,
        Records(np.array(train_labels, dtype=np.int64), paths=train_paths),
        Records(np.array(val_labels, dtype=np.int64), paths=val_paths),
        native_side=side,
        grayscale=gray_share >= 0.9,
        val_fraction=val_fraction,
    )


def split_folders(root: Path) -> tuple[list[str], dict[str, tuple[list[str], list[int]]]]:
    """(class names, {split: (files, labels)}) of a class-per-folder tree: ``train`` and ``val`` when it has
    ``train/`` and ``val/`` (or ``validation/``, ``test/``) sub-folders, else ``all``."""
    val_dir = next((root / d for d in ("val", "validation", "test") if (root / d).is_dir()), None)
    if not ((root / "train").is_dir() and val_dir is not None):
        classes, paths, labels = _checked_scan(root)
        return classes, {"all": (paths, labels)}
    classes, train_paths, train_labels = _checked_scan(root / "train")
    val_classes, val_paths, val_labels = scan_class_folders(val_dir)
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        raise ValueError(
            f"{val_dir} has classes that {root}/train lacks ({', '.join(unknown)}); give both the same classes."
        )
    val_labels = [classes.index(val_classes[i]) for i in val_labels]
    return classes, {"train": (train_paths, train_labels), "val": (val_paths, val_labels)}


def _checked_scan(root: Path) -> tuple[list[str], list[str], list[int]]:
    classes, paths, labels = scan_class_folders(root)
    if not paths:
        raise ValueError(f"{root} holds no images in class folders; lay it out as {root}/<class>/<image files>.")
    if len(classes) < 2:
        raise ValueError(
            f"{root} has images of one class only ({classes[0]}); a classifier needs two or more class folders."
        )
    return classes, paths, labels


def _memory_bytes() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 1 << 40


def _check_fits_in_memory(n_images: int, base_size: int, name: str) -> None:
    needed = n_images * 3 * base_size * base_size
    if needed > _memory_bytes() // 2:
        raise ValueError(
            f"{name}: {n_images} images at {base_size}px need {needed / 2**30:.1f} GiB decoded, more than half this "
            f"machine's memory; use --cache disk or stream (or auto), a smaller --image-size, or a subset."
        )


def save_samples(listing: DataListing, folder: Path, count: int = 8) -> list[Path]:
    """Write the first ``count`` validation images, at their own size, as PNGs named ``<index>_<class>.png``
    (to look at, or to predict)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(min(count, len(listing.val))):
        if listing.val.images is not None:
            array = listing.val.images[i].permute(1, 2, 0).numpy()  # [3, H, W] -> [H, W, 3]
        else:
            array = decode_image(listing.val.paths[i])
            if array is None:
                continue
        label = listing.class_names[int(listing.val.labels[i])].replace("/", "-")
        path = folder / f"{i:03d}_{label}.png"
        Image.fromarray(array).save(path)
        written.append(path)
    return written

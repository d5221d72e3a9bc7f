"""The streaming data path per CPU core: decode + crop rates, draft mode on 12 MP photos, folder vs pack, the
wait of a fast consumer, and timm's loader on the same files, side by side in one run.

    PYTHONPATH=. python benchmarks/data_pipeline.py [--small 2000] [--large 24] [--rounds 3]
                                                    [--timm-python /tmp/timmenv/bin/python] [--work DIR]

Generates photo-like JPEGs (crops of scikit-learn's two sample photos with colour shifts and sensor noise,
quality 90): ``--small`` at 500x375 in ten class folders, and ``--large`` at 4032x3024 (12 MP). Then, each
pipeline in one process on one thread, rounds interleaved so drift hits all alike (median of the rounds,
images per CPU-second from ``time.process_time``):

- ``pillow decode + RRC 224``: the reference work per image: Pillow decodes the whole JPEG, then resizes a
  random-resized-crop box (torchvision's ranges) to 224x224, bilinear (``Image.resize(box=...)``).
- ``vitkit worker, folder`` and ``vitkit worker, pack``: what a DataLoader worker of ``--cache stream`` does
  per image (``StreamSet[i]``: read, decode with draft mode when the photo is far larger, resize to the
  stored 256 square, uint8) from the folder and from ``vitkit pack``'s shards. The random-resized crop itself
  runs batched on the training device; its CPU cost here is reported on its own line.
- ``timm loader``: ``timm.data.create_loader`` on the same folder (ImageDataset, is_training, 224,
  bilinear, no colour jitter, prefetcher layout: uint8 out, normalisation left to the device), iterated with
  ``num_workers=0`` in a separate interpreter that has timm (``--timm-python``; timm needs torchvision, whose
  PyPI build does not import beside vitkit's CPU torch). Only its loop is timed.

12 MP: the vitkit worker with and without draft mode, against Pillow's full decode + RRC. Last, the wait:
``StreamSet.batches`` with 1..cores DataLoader workers feeding a consumer that takes 64 images every
64/1300 s (a GPU training MobileViT-XXS at timm's published 1,317 img/s), and the share of time it waits.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CONSUMER_RATE = 1300  # img/s: about timm's published MobileViT-XXS training rate on one RTX 3090 (AMP)
BATCH = 64


def make_photos(folder: Path, count: int, size: tuple[int, int], classes: int, seed: int) -> list[Path]:
    """``count`` JPEGs of ``size`` (w, h) in ``classes`` class folders, each a random crop of a sample photo,
    colour-shifted, with sensor noise (so the entropy, hence the decode cost, is a photo's)."""
    import sklearn.datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(sklearn.datasets.__file__).parent / "images"
    sources = [
        np.asarray(Image.open(base / name).convert("RGB"), dtype=np.float32) for name in ("china.jpg", "flower.jpg")
    ]
    paths = []
    for i in range(count):
        source = sources[i % 2]
        h, w = source.shape[:2]
        ch, cw = int(rng.integers(h // 2, h)), int(rng.integers(w // 2, w))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = source[top : top + ch, left : left + cw] * rng.uniform(0.8, 1.2, 3)
        image = Image.fromarray(crop.clip(0, 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 3, (size[1], size[0], 3))
        path = folder / f"class_{i % classes}" / f"photo_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def rrc_box(width: int, height: int, rng: random.Random) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop box: area 8-100%, aspect 3/4-4/3, ten tries, then the centre crop."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    side = min(width, height)
    return (width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2


def pillow_rrc(paths: list, rng: random.Random) -> None:
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR, box=rrc_box(*image.size, rng)))


def vitkit_worker(dataset, count: int) -> None:
    for i in range(count):
        dataset[i]


def timed(fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


TIMM_SCRIPT = r"""
import json, sys, time
import torch
import timm, timm.data
torch.set_num_threads(1)
folder, count = sys.argv[1], int(sys.argv[2])
dataset = timm.data.ImageDataset(folder)
loader = timm.data.create_loader(
    dataset, input_size=(3, 224, 224), batch_size=64, is_training=True, use_prefetcher=True, no_aug=False,
    color_jitter=0.0, interpolation="bilinear", num_workers=0, device=torch.device("cpu"),
)
inner = getattr(loader, "loader", loader)  # the DataLoader under timm's PrefetchLoader: uint8 batches
seen, batches = 0, iter(inner)
next(batches)  # warm-up
cpu, wall = time.process_time(), time.perf_counter()
for images, _ in batches:
    seen += len(images)
    if seen >= count:
        break
print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "images": seen,
                  "dtype": str(images.dtype), "shape": list(images.shape), "timm": timm.__version__}))
"""


def timm_loader(python: str, folder: Path, count: int) -> dict | None:
    if not python or not Path(python).exists():
        return None
    proc = subprocess.run([python, "-c", TIMM_SCRIPT, str(folder), str(count)], capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def consumer_wait(stream, workers: int, seconds: float) -> dict:
    """Share of wall time a consumer taking BATCH images every BATCH / CONSUMER_RATE s spends waiting."""
    order = torch.randperm(len(stream), generator=torch.Generator().manual_seed(workers))
    batches = list(order.split(BATCH))
    waited, seen = 0.0, 0
    it = iter(stream.batches(batches, workers))
    next(it)  # the workers' start-up is not counted
    started = asked = time.perf_counter()
    for batch in it:
        waited += time.perf_counter() - asked
        seen += len(batch.index)
        time.sleep(len(batch.index) / CONSUMER_RATE)  # the device's training step
        asked = time.perf_counter()
        if time.perf_counter() - started > seconds:
            break
    total = time.perf_counter() - started
    return {"workers": workers, "images_per_s": round(seen / total, 1), "wait_share": round(waited / total, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=2000, help="500x375 JPEGs")
    parser.add_argument("--large", type=int, default=24, help="4032x3024 JPEGs")
    parser.add_argument("--count", type=int, default=600, help="images timed per pipeline and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timm-python", default="/tmp/timmenv/bin/python")
    parser.add_argument("--work", help="folder for the generated photos (kept; default a new temporary one)")
    parser.add_argument("--wait-seconds", type=float, default=20.0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # per core: one worker is one process on one thread

    from vitkit.data.images import read_image, square_uint8
    from vitkit.data.pack import pack
    from vitkit.data.sources import list_folder
    from vitkit.data.stream import StreamSet
    from vitkit.data.transforms import BatchTransform
    from vitkit.models import create_model

    work = Path(args.work or tempfile.mkdtemp(prefix="vitkit-pipeline-"))
    small_dir, large_dir, pack_dir = work / "small", work / "large", work / "small.pack"
    if not small_dir.is_dir():
        make_photos(small_dir, args.small, (500, 375), 10, seed=0)
    if not large_dir.is_dir():
        make_photos(large_dir, args.large, (4032, 3024), 2, seed=1)
    if not (pack_dir / "pack.json").is_file():
        pack(small_dir, pack_dir, log=lambda *a, **k: None)
    p = create_model("mobilevit_xxs").preprocess
    p = type(p)(224, p.mean, p.std, 0.875, "bilinear", "shorter")  # timm's ImageNet-224 training geometry
    side = p.resize_size  # 256: the square a worker stores, the crop is taken on the device
    folder = list_folder(small_dir, 0.0001)
    packed = list_folder(pack_dir, 0.0001)
    by_folder = StreamSet(folder.train.paths, folder.train.labels, side, p)
    by_pack = StreamSet(packed.train.paths, packed.train.labels, side, p)
    large = sorted(str(x) for x in large_dir.rglob("*.jpg"))
    n = min(args.count, len(by_folder))
    small_paths = [str(x) for x in folder.train.paths[:n]]

    def full_decode_square(path):  # the worker's work without draft mode
        return square_uint8(read_image(path), side, p.resize_mode, p.interpolation)

    large_ds = StreamSet(large, np.zeros(len(large), dtype=np.int64), side, p)
    transform = BatchTransform(p, "random-resized-crop", side, True)
    stored = torch.stack([by_folder[i][0] for i in range(BATCH)])
    rows: dict[str, list[float]] = {}
    timm_runs = []
    for round_ in range(args.rounds):
        rng = random.Random(round_)
        jobs = {
            "pillow decode + RRC 224 (reference)": (n, lambda: pillow_rrc(small_paths, rng)),
            "vitkit worker, folder": (n, lambda: vitkit_worker(by_folder, n)),
            "vitkit worker, pack": (n, lambda: vitkit_worker(by_pack, n)),
            "vitkit RRC 224 + flip on the device (CPU here), batch 64": (
                BATCH * 4, lambda: [transform(stored, torch.Generator().manual_seed(i)) for i in range(4)]),
            "12 MP: pillow full decode + RRC 224": (len(large), lambda: pillow_rrc(large, rng)),
            "12 MP: vitkit worker, full decode": (len(large), lambda: [full_decode_square(x) for x in large]),
            "12 MP: vitkit worker, draft mode": (len(large), lambda: vitkit_worker(large_ds, len(large))),
        }  # fmt: skip
        for name, (count, fn) in jobs.items():
            cpu, wall = timed(fn)
            rows.setdefault(name, []).append(count / cpu)
        run = timm_loader(args.timm_python, small_dir, n)
        if run:
            timm_runs.append(run)
            rows.setdefault(f"timm loader (timm {run['timm']}), folder", []).append(run["images"] / run["cpu"])
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    rates = {name: statistics.median(values) for name, values in rows.items()}
    cores = os.cpu_count() or 1
    waits = [consumer_wait(by_pack, w, args.wait_seconds) for w in range(1, cores + 1)]
    worker_rate = rates["vitkit worker, pack"]
    report = {
        "benchmark": "data_pipeline",
        "images_per_cpu_second": {k: round(v, 1) for k, v in rates.items()},
        "vitkit_worker_vs_pillow_reference": round(rates["vitkit worker, folder"] / rates["pillow decode + RRC 224 (reference)"], 3),
        "draft_speedup_12mp": round(rates["12 MP: vitkit worker, draft mode"] / rates["12 MP: vitkit worker, full decode"], 2),
        "draft_vs_pillow_full_decode_12mp": round(rates["12 MP: vitkit worker, draft mode"] / rates["12 MP: pillow full decode + RRC 224"], 2),
        "cores_for_1300_img_per_s": round(CONSUMER_RATE / worker_rate, 1),
        "consumer_wait": waits,
        "timm_loader_batches": timm_runs[-1]["shape"] if timm_runs else None,
        "photos": f"{args.small} at 500x375, {args.large} at 4032x3024, quality 90, in {work}",
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    timm_name = next((k for k in rates if k.startswith("timm")), None)
    if timm_name:
        report["vitkit_worker_vs_timm_loader"] = round(rates["vitkit worker, folder"] / rates[timm_name], 3)
    print("\n| pipeline (one process, one thread) | images per CPU-second |\n| --- | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} |")
    print(
        f"\n| DataLoader workers | images/s delivered | consumer waits ({CONSUMER_RATE} img/s wanted) |\n| ---: | ---: | ---: |"
    )
    for w in waits:
        print(f"| {w['workers']} | {w['images_per_s']:,.0f} | {w['wait_share']:.0%} |")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""Data pipeline vs training step throughput for the flowers recipe, on generated 500x375 JPEGs.

    python benchmarks/flowers_pipeline.py [--images 300] [--workers 2] [--device cpu]

The recipe (flowers_mobilevit_xxs_keras) decodes every JPEG once into memory at 280x280, then each
epoch only augments in memory (random crop 256, flip), batched, on the training device. This prints
img/s for: the one-time parallel decode, the per-epoch augmentation, and the training step (forward,
backward, Adam) of the Keras example's MobileViT-XXS and of the paper's, at batch 32 and 256 px.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitkit
from vitkit.data.images import decode_files, load_square
from vitkit.data.transforms import BatchTransform
from vitkit.preprocess import Preprocess

# the flowers_mobilevit_xxs_keras recipe's: squash to 280, random crop 256, flip
PREPROCESS = Preprocess(256, crop_pct=1.0, interpolation="bilinear", resize_mode="squash")


def make_jpegs(folder: Path, count: int, seed: int = 0) -> list[str]:
    """Photo-like 500x375 JPEGs (smooth colour fields plus noise: realistic file sizes and decode cost)."""
    rng = np.random.default_rng(seed)
    paths = []
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(count):
        cls = folder / f"class_{i % 5}"
        cls.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0.005, 0.03, 3)
        base = np.stack([np.sin(xx * a + i), np.cos(yy * b), np.sin((xx + yy) * c)], axis=-1) * 90 + 128
        image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = cls / f"{i:05d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        paths.append(str(path))
    return paths


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
    }

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        start = time.perf_counter()
        load = functools.partial(load_square, side=280, p=PREPROCESS)
        images, _, report = decode_files(paths, load, workers=args.workers)
        results["decode_once_img_per_s"] = round(len(paths) / (time.perf_counter() - start), 1)
        results["decode_workers"] = args.workers

    batch = images[: args.batch_size].to(device)
    augment = BatchTransform(PREPROCESS, augment="resize-crop-flip", train_side=280)
    gen = torch.Generator().manual_seed(0)
    seconds = timed(lambda: augment(batch, gen), 10)
    results["augment_img_per_s"] = round(args.batch_size / seconds, 1)

    x = augment(batch, gen)
    y = torch.randint(0, 5, (args.batch_size,), device=device)
    for name in ("mobilevit_xxs_keras", "mobilevit_xxs"):
        model = vitkit.create_model(name, num_classes=5).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        results[f"train_step_img_per_s_{name}"] = round(
            args.batch_size / timed(step, 3 if device.type == "cpu" else 20), 1
        )

    results["augment_over_train_step"] = round(
        results["augment_img_per_s"] / results["train_step_img_per_s_mobilevit_xxs_keras"], 1
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""JPEG draft mode: what decoding large photos at a reduced DCT scale saves, and what it changes.

    PYTHONPATH=. python benchmarks/draft_decode.py [--digits runs/demo] [--photos 12] [--digit-count 300]

`read_image(path, min_side)` decodes a JPEG whose shorter side is over 4x the side it is resized to next at
1/2, 1/4 or 1/8 scale, keeping the shorter side at least 2x that side, so the antialiased resize after it still
does the final filtering. Every path to a model takes it (`vitkit predict`, evaluation, the server, training
crops). This script times the evaluation pixels of 12-megapixel photo-like JPEGs (scikit-learn's two sample
photos, enlarged, with sensor noise) for MobileViT-XXS at 256 px with and without draft mode, compares the
pixels, and measures top-1 agreement of a trained model: the digits model on digits enlarged to 2048x2048
JPEGs (the only photo-sized input with a trained model that works offline here).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def photos(folder: Path, count: int) -> list[Path]:
    import sklearn.datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    base = Path(sklearn.datasets.__file__).parent / "images"
    paths = []
    for i in range(count):
        source = Image.open(base / ("china.jpg", "flower.jpg")[i % 2]).convert("RGB")
        left, top = rng.integers(0, 120), rng.integers(0, 80)
        crop = source.crop((left, top, left + 500, top + 375)).resize((4032, 3024), Image.Resampling.BICUBIC)
        noisy = np.asarray(crop, dtype=np.float32) + rng.normal(0, 4, (3024, 4032, 3))
        path = folder / f"photo_{i}.jpg"
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=92)
        paths.append(path)
    return paths


def timed(fn, paths) -> tuple[float, list]:
    out = [fn(p) for p in paths[:1]]  # warm-up
    start = time.perf_counter()
    out = [fn(p) for p in paths]
    return (time.perf_counter() - start) / len(paths), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", help="a trained digits run folder (the top-1 agreement part)")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--digit-count", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vitkit.data.images import eval_array, read_image
    from vitkit.models import create_model

    work = Path(tempfile.mkdtemp(prefix="vitkit-draft-"))
    p = create_model("mobilevit_xxs").preprocess
    paths = photos(work, args.photos)
    full_s, full = timed(lambda path: eval_array(read_image(path), p), paths)
    draft_s, draft = timed(lambda path: eval_array(read_image(path, p.resize_size), p), paths)
    diff = torch.stack(full).float() - torch.stack(draft).float()
    report = {
        "photos": f"{args.photos} JPEGs of 4032x3024, MobileViT-XXS preprocessing ({p.describe()})",
        "full_decode_ms": round(full_s * 1e3, 1),
        "draft_decode_ms": round(draft_s * 1e3, 1),
        "speedup": round(full_s / draft_s, 2),
        "pixel_mean_abs_diff": round(float(diff.abs().mean()), 3),
        "pixel_p99_abs_diff": round(float(diff.abs().flatten().quantile(0.99)), 1),
    }
    if args.digits:
        from PIL import Image
        from sklearn.datasets import load_digits

        from vitkit.inference import Classifier

        classifier = Classifier(args.digits, device="cpu")
        digits = load_digits()
        idx = np.random.default_rng(1).permutation(len(digits.images))[: args.digit_count]
        files = []
        for i in idx:
            image = Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).convert("RGB")
            path = work / f"digit_{i}.jpg"
            image.resize((2048, 2048), Image.Resampling.BICUBIC).save(path, quality=92)
            files.append(path)
        q = classifier.preprocess
        predictions = {}
        for name, side in (("full", None), ("draft", q.resize_size)):
            seconds, pixels = timed(lambda path: eval_array(read_image(path, side), q), files)
            predictions[name] = classifier.probabilities(torch.stack(pixels)).argmax(1).numpy()
            report[f"digits_{name}_ms"] = round(seconds * 1e3, 2)
        labels = digits.target[idx]
        report.update(
            digits=f"{len(files)} digits enlarged to 2048x2048 JPEG, model {args.digits}",
            digits_agreement=round(float((predictions["full"] == predictions["draft"]).mean()), 4),
            digits_top1_full=round(float((predictions["full"] == labels).mean()), 4),
            digits_top1_draft=round(float((predictions["draft"] == labels).mean()), 4),
        )
    for key, value in report.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

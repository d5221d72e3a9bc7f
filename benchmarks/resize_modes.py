"""Shorter side + centre crop against squash, on real photos, with a model someone else trained on real photos.

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install torch==2.13.0 tensorflow-cpu scikit-image scikit-learn
    PYTHONPATH=. /tmp/tfenv/bin/python benchmarks/resize_modes.py PATH/keras_example_flowers_dynamic_range.tflite

The model: the keras.io MobileViT-XXS example trained on tf_flowers by a third party and converted the
example's way (dynamic-range int8, Flex ops, so it needs TensorFlow's interpreter; 79% validation accuracy in
its training report). The photos: every colour photo scikit-image and scikit-learn ship, and from each,
windows at aspect ratios from 1:2 to 2:1 (a phone photo is 3:4 or 9:16). Each window is made 256x256 by
``vitkit.preprocess.eval_pixels`` both ways; the script prints how often the model's top-1 class is the same,
and the mean total-variation distance between the two probability vectors, per aspect ratio.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from vitkit.preprocess import Preprocess, eval_pixels

ASPECTS = (0.5, 0.75, 1.0, 4 / 3, 2.0)  # width / height of the windows


def photos() -> dict[str, np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel"):
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # a photo that scikit-image would have to download
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            out[name] = np.ascontiguousarray(image[..., :3])
    for name, image in zip(("china", "flower"), load_sample_images().images):
        out[name] = image
    return out


def windows(image: np.ndarray, aspect: float, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` windows of ``aspect`` (width / height), each at least half the photo's shorter side."""
    H, W = image.shape[:2]
    out = []
    for _ in range(count):
        h = int(rng.uniform(0.5, 1.0) * min(H, W / aspect))
        w = int(h * aspect)
        top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        out.append(image[top : top + h, left : left + w])
    return out


def main(path: str) -> None:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def probabilities(pixels: torch.Tensor) -> np.ndarray:
        x = pixels.permute(0, 2, 3, 1).numpy().astype(np.float32)  # [1, 3, S, S] -> [1, S, S, 3], 0-255
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])[0]  # the example's head ends in a softmax

    rng = np.random.default_rng(0)
    modes = {m: Preprocess(256, crop_pct=1.0, interpolation="bilinear", resize_mode=m) for m in ("shorter", "squash")}
    rows = []
    images = photos()
    for aspect in ASPECTS:
        agree, distance, n = 0, 0.0, 0
        for image in images.values():
            for window in windows(image, aspect, 6, rng):
                batch = torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1)[None]
                p = {m: probabilities(eval_pixels(batch, pre)) for m, pre in modes.items()}
                agree += int(p["shorter"].argmax() == p["squash"].argmax())
                distance += 0.5 * float(np.abs(p["shorter"] - p["squash"]).sum())
                n += 1
        rows.append({"aspect_w_over_h": round(aspect, 3), "windows": n, "top1_agreement": round(agree / n, 3),
                     "mean_tv_distance": round(distance / n, 3)})  # fmt: skip
        print(json.dumps(rows[-1]))
    total = sum(r["windows"] for r in rows)
    non_square = [r for r in rows if r["aspect_w_over_h"] != 1.0]
    summary = {
        "photos": sorted(images),
        "windows": total,
        "top1_agreement_non_square": round(
            sum(r["top1_agreement"] * r["windows"] for r in non_square) / sum(r["windows"] for r in non_square), 3
        ),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])

"""The augmentations timm users expect: each does what its reference does, changes the batch, and is reproducible
from its seed and different across seeds. Pixel operations are checked value for value against Pillow's
ImageOps / ImageEnhance (the definitions RandAugment's and TrivialAugment's papers and torchvision use)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from sklearn.datasets import load_sample_image

import vitkit
from vitkit.data import autoaugment as aa
from vitkit.data.transforms import BatchTransform, random_erasing
from vitkit.preprocess import Preprocess
from vitkit.training.config import TrainConfig
from vitkit.training.mixing import MixUpCutMix, smooth_one_hot
from vitkit.data.sampling import epoch_order
from vitkit.training.trainer import scaled_lr


def photos(side: int = 96) -> torch.Tensor:
    """Two real photos (scikit-learn's samples), float [2, 3, side, side] with values 0-255."""
    images = [Image.fromarray(load_sample_image(n)).resize((side, side)) for n in ("china.jpg", "flower.jpg")]
    return torch.from_numpy(np.stack([np.asarray(i) for i in images])).permute(0, 3, 1, 2).float()


def as_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(x.round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()


PIL_OPS = {  # operation, strength -> Pillow's version of it
    "equalize": (0.0, ImageOps.equalize),
    "posterize": (3.0, lambda i: ImageOps.posterize(i, 5)),  # 3 bits removed: 5 kept
    "solarize": (0.4, lambda i: ImageOps.solarize(i, 255 * 0.6)),
    "color": (0.7, lambda i: ImageEnhance.Color(i).enhance(1.7)),
    "contrast": (-0.6, lambda i: ImageEnhance.Contrast(i).enhance(0.4)),
    "brightness": (0.5, lambda i: ImageEnhance.Brightness(i).enhance(1.5)),
    "sharpness": (0.9, lambda i: ImageEnhance.Sharpness(i).enhance(1.9)),
    "auto_contrast": (0.0, ImageOps.autocontrast),
}


@pytest.mark.parametrize("name", sorted(PIL_OPS))
def test_pixel_operations_equal_pillows(name):
    x = photos()
    if name == "auto_contrast":  # the sample photos already span 0-255; squeeze them so the stretch shows
        x = (x * 0.5 + 40).round()
    strength, reference = PIL_OPS[name]
    ours = aa.OPERATIONS[name](x, torch.full((2,), strength), (128, 128, 128))
    for i in range(2):
        expected = as_tensor(reference(as_pil(x[i])))
        assert not torch.equal(expected, x[i])  # the operation changes the photo at this strength
        # exact for the integer operations; Pillow's 8-bit blends round (and its contrast mean is an integer)
        tolerance = 0 if name in ("equalize", "posterize", "solarize") else 1.5
        assert (ours[i].round() - expected).abs().max() <= tolerance, name


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"])
def test_geometric_operations_move_pixels_and_fill_with_the_fill_colour(name):
    x = photos()
    strength = {"rotate": 30.0}.get(name, 0.3)
    out = aa.OPERATIONS[name](x, torch.full((2,), strength), (10.0, 20.0, 30.0))
    assert out.shape == x.shape and not torch.allclose(out, x, atol=1)
    # a corner that leaves the image takes the fill colour
    corners = out[0, :, [0, 0, -1, -1], [0, -1, 0, -1]].T  # [4 corners, 3]
    assert any(torch.allclose(c, torch.tensor([10.0, 20.0, 30.0]), atol=1e-3) for c in corners)
    assert torch.allclose(aa.OPERATIONS[name](x, torch.zeros(2), (0, 0, 0)), x, atol=1e-3)  # strength 0: nothing


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_policies_change_the_batch_reproducibly_and_differ_across_seeds(policy):
    x = photos(64).repeat(8, 1, 1, 1)  # 16 images

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return aa.rand_augment(x, g) if policy == "randaugment" else aa.trivial_augment(x, g)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x) and a.min() >= 0 and a.max() <= 255 and a.shape == x.shape
    # each image draws its own operation: copies of the same photo come out in several different ways
    copies = a[0::2]  # the eight copies of the first photo
    assert len({tuple(img.flatten()[::97].round().tolist()) for img in copies}) >= 4


def test_each_image_draws_its_own_operation():
    x = photos(32).repeat(14, 1, 1, 1)  # 28 images: every operation drawn by a copy of each photo
    choice = torch.arange(28) % len(aa.OPS)
    out = aa.apply_ops(x, choice, torch.full((28,), 0.5), torch.Generator().manual_seed(0), 0, (128, 128, 128))
    for i, k in enumerate(choice.tolist()):  # image i is operation choice[i] alone, at half its range
        name = aa.OPS[k]
        if name == "identity":
            assert torch.equal(out[i], x[i])
        elif name not in aa.SIGNED:  # signed operations also draw a direction; the rest are fully determined
            alone = aa.OPERATIONS[name](x[i : i + 1], torch.tensor([0.5 * aa.FULL.get(name, (1, 1))[0]]), (128,) * 3)
            torch.testing.assert_close(out[i : i + 1], alone)
        else:
            assert not torch.equal(out[i], x[i])


def test_random_erasing_erases_one_rectangle_of_the_stated_area():
    x = torch.zeros(64, 3, 48, 48)
    out = random_erasing(x, torch.Generator().manual_seed(0), probability=1.0)
    erased = (out != 0).any(1)  # [B, H, W]: where noise replaced the zeros
    shares = erased.float().mean((1, 2))
    assert (shares >= 0.015).all() and (shares <= 0.40).all()  # 2%-33% of the area, rounded to whole pixels
    for mask in erased:  # one axis-aligned rectangle: its rows and columns span exactly its pixel count
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert torch.equal(out, random_erasing(x, torch.Generator().manual_seed(0), 1.0))
    assert not torch.equal(out, random_erasing(x, torch.Generator().manual_seed(1), 1.0))
    assert torch.equal(random_erasing(x, torch.Generator().manual_seed(0), 0.0), x)
    half = random_erasing(x, torch.Generator().manual_seed(3), 0.5)
    assert 16 <= (half != 0).any(3).any(2).any(1).sum() <= 48  # about half the images (Binomial(64, 0.5))


def test_batch_transform_applies_the_options_reproducibly():
    images = photos(64).byte()
    pre = Preprocess(48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    plain = BatchTransform(pre, "resize-crop-flip")
    strong = BatchTransform(pre, "resize-crop-flip", auto_augment="trivialaugment", erasing=1.0)

    def run(tf, seed):
        return tf(images, torch.Generator().manual_seed(seed))

    assert torch.equal(run(strong, 4), run(strong, 4)) and not torch.equal(run(strong, 4), run(strong, 5))
    assert not torch.equal(run(strong, 4), run(plain, 4))


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_and_cutmix_mix_images_and_targets_alike(mixup, cutmix):
    big = photos(64)
    x = torch.cat([big[:, :, r : r + 32, c : c + 32] for r, c in ((0, 0), (0, 32), (32, 0), (32, 32))])  # 8 crops
    y = torch.arange(8) % 3
    own = smooth_one_hot(y, 3, 0.1)
    partner = x.flip(0)
    mix = MixUpCutMix(3, mixup, cutmix, smoothing=0.1)
    kinds = set()
    for seed in range(8):
        out, target = mix(x, y, torch.Generator().manual_seed(seed))
        # targets: own * lam + partner's * (1 - lam); image 0 (class 0) pairs with image 7 (class 1)
        torch.testing.assert_close(target.sum(1), torch.ones(8))
        lam = ((target[0, 0] - own[7, 0]) / (own[0, 0] - own[7, 0])).item()
        torch.testing.assert_close(target, own * lam + own.flip(0) * (1 - lam))
        if torch.allclose(out, x * lam + partner * (1 - lam), atol=1e-3):
            kinds.add("mixup")
            continue
        from_own = (out == x).all(1)  # cutmix: every pixel from one of the two images, the partner's share 1 - lam
        assert (from_own | (out == partner).all(1)).all()
        assert math.isclose(from_own[0].float().mean().item(), lam, abs_tol=1e-6)
        kinds.add("cutmix")
    assert kinds == {k for k, alpha in (("mixup", mixup), ("cutmix", cutmix)) if alpha > 0}
    a = mix(x, y, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], mix(x, y, torch.Generator().manual_seed(9))[0])
    assert not all(torch.equal(a[0], mix(x, y, torch.Generator().manual_seed(s))[0]) for s in range(10, 13))
    assert not torch.equal(a[0], x)


def test_class_balanced_order_draws_every_class_equally():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    order = epoch_order(labels, torch.Generator().manual_seed(0), class_balanced=True)
    counts = torch.bincount(labels[order], minlength=3)
    assert len(order) == 1000 and all(abs(c - 333) < 60 for c in counts.tolist())  # 1/3 each, not 90/9/1%
    assert len(set(order[labels[order] == 2].tolist())) == 10  # all ten rare images drawn, each many times
    assert torch.equal(order, epoch_order(labels, torch.Generator().manual_seed(0), class_balanced=True))
    assert torch.equal(epoch_order(labels, torch.Generator().manual_seed(0)).sort().values, torch.arange(1000))


def test_learning_rate_scales_with_the_batch_by_the_documented_rule():
    base = dict(lr=0.1, lr_base_batch=256, batch_size=64, accumulate=2)
    assert scaled_lr(TrainConfig(**base, optimizer="sgd"), world_size=4) == pytest.approx(0.2)  # 512/256 linear
    assert scaled_lr(TrainConfig(**base, optimizer="adamw"), world_size=1) == pytest.approx(
        0.1 * math.sqrt(0.5)
    )  # sqrt(128/256)
    assert scaled_lr(TrainConfig(lr=0.1), world_size=8) == 0.1  # without lr_base_batch: as given


def test_training_with_every_augmentation_on_is_reproducible(tmp_path):
    common = dict(model="mobilevit_xxs", data="digits", image_size=32, epochs=1, batch_size=32, seed=3,
                  auto_augment="randaugment", random_erasing=0.25, mixup=0.8, cutmix=1.0, label_smoothing=0.1,
                  class_balanced=True)  # fmt: skip
    first = vitkit.train(**common, output=str(tmp_path / "a")).history[0]
    again = vitkit.train(**common, output=str(tmp_path / "b")).history[0]
    plain = vitkit.train(**{**common, "auto_augment": "none", "mixup": 0.0}, output=str(tmp_path / "c")).history[0]
    assert first["train_loss"] == again["train_loss"] and first["val_top1"] == again["val_top1"]
    assert first["train_loss"] != plain["train_loss"]


def test_random_erasing_keeps_the_memory_format():
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = random_erasing(x, torch.Generator().manual_seed(0), 1.0)
    assert out.is_contiguous(memory_format=torch.channels_last) and not torch.equal(out, x)

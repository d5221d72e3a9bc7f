"""The preprocessing contract: one function makes the pixels every path evaluates, and it does what it says."""

import dataclasses
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import vitkit
from tests.imagegen import make_image_folder
from vitkit.data import list_data
from vitkit.data.images import load_eval_pixels
from vitkit.data.sources import eval_set
from vitkit.export.api import export_data
from vitkit.export.deploy import DeployModel
from vitkit.preprocess import Preprocess, eval_pixels, normalize

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def filled(height: int, width: int, color) -> torch.Tensor:
    return torch.tensor(color, dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, height, width).clone()


def framed(side: int = 100, border: int = 20) -> torch.Tensor:
    """[1, 3, side, side]: a red frame ``border`` pixels wide around a green centre."""
    image = filled(side, side, RED)
    image[..., border : side - border, border : side - border] = filled(side - 2 * border, side - 2 * border, GREEN)
    return image


def colors_in(pixels: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(c) for c in pixels[0].permute(1, 2, 0).reshape(-1, 3).tolist()}


def test_centre_crop_keeps_only_the_centre():
    # crop_pct 0.5 at 50 px: resize to 100, keep the central 50 (pixels 25..75 of the original): none of the
    # 20-pixel red frame may show; ignoring crop_pct would squash the whole frame into view
    out = eval_pixels(framed(), Preprocess(50, crop_pct=0.5))
    assert out.shape == (1, 3, 50, 50) and out.dtype == torch.uint8
    assert colors_in(out) == {GREEN}
    whole = eval_pixels(framed(), Preprocess(50, crop_pct=1.0))  # the frame, 10 of 50 pixels wide per side
    assert tuple(whole[0, :, 25, 3].tolist()) == RED and tuple(whole[0, :, 25, 25].tolist()) == GREEN
    assert tuple(whole[0, :, 25, 46].tolist()) == RED


def test_resize_mode_shorter_side_crops_the_long_side_and_squash_keeps_it():
    # a 100 x 300 image in three vertical bands: red | green | blue
    image = torch.cat([filled(100, 100, RED), filled(100, 100, GREEN), filled(100, 100, BLUE)], dim=3)
    shorter = eval_pixels(image, Preprocess(50, resize_mode="shorter"))  # 50 x 150, centre 50: the green band
    squash = eval_pixels(image, Preprocess(50, resize_mode="squash"))  # all three bands, a third each
    assert colors_in(shorter[..., 1:-1]) == {GREEN}  # the outer columns blend with the bands' edges
    assert tuple(squash[0, :, 25, 5].tolist()) == RED and tuple(squash[0, :, 25, 45].tolist()) == BLUE
    assert Preprocess(50, crop_pct=0.9).resize_size == 55 and Preprocess(224, crop_pct=0.9).resize_size == 248


@pytest.mark.parametrize("shape, resize_mode", [((37, 53), "shorter"), ((37, 53), "squash"), ((40, 40), "shorter")])
def test_interpolation_changes_the_pixels(shape, resize_mode):
    image = torch.randint(0, 256, (1, 3, *shape), dtype=torch.uint8)
    outs = {
        m: eval_pixels(image, Preprocess(64, interpolation=m, resize_mode=resize_mode))
        for m in ("bilinear", "bicubic", "nearest")
    }
    assert not torch.equal(outs["bilinear"], outs["bicubic"])
    assert not torch.equal(outs["bilinear"], outs["nearest"])
    # nearest copies source pixels, it never blends: every output value is one of the input's
    assert set(outs["nearest"].unique().tolist()) <= set(image.unique().tolist())


def smooth_image(height: int = 37, width: int = 53) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bands = [np.sin(xx * 0.2) * 100 + 128, np.cos(yy * 0.15) * 100 + 128, (xx + yy) * 2.5]
    return np.clip(np.stack(bands, -1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("interpolation, pillow", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
@pytest.mark.parametrize("size", [(20, 30), (80, 100), (37, 20)])
def test_resize_is_pillows_within_rounding(interpolation, pillow, size):
    """Pillow's kernels (antialiased, bicubic a = -0.5), as timm's evaluation uses them: within one level of
    Pillow's own resize on a smooth image (Pillow rounds to 8 bits between its two passes)."""
    from vitkit.preprocess import resize, to_uint8

    image = smooth_image()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    ours = to_uint8(resize(x, size, interpolation))[0].permute(1, 2, 0).numpy().astype(int)
    theirs = np.asarray(Image.fromarray(image).resize(size[::-1], pillow)).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_nearest_picks_pixel_centres_as_pillow():
    from vitkit.preprocess import resize

    row = torch.tensor([0.0, 80.0, 160.0, 240.0]).view(1, 1, 1, 4)
    assert resize(row, (1, 2), "nearest").flatten().tolist() == [80.0, 240.0]  # Pillow: the same two


@pytest.mark.parametrize("height, width", [(100, 300), (300, 100)])
def test_shorter_side_keeps_the_aspect_and_the_centre(height, width):
    """A ramp along the long side: after the shorter side goes to 50 and the centre 50 is kept, the first and
    last columns (rows) are the original's at one third and two thirds of its length."""
    long = max(height, width)
    ramp = torch.linspace(0, 255, long)
    image = (ramp.view(1, 1, 1, long) if width > height else ramp.view(1, 1, long, 1)).expand(1, 3, height, width)
    out = eval_pixels(image.round().to(torch.uint8), Preprocess(50, resize_mode="shorter"))[0, 0].float()
    line = out[25] if width > height else out[:, 25]
    assert abs(float(line[0]) - 255 / 3) < 4 and abs(float(line[-1]) - 2 * 255 / 3) < 4
    assert bool((line[1:] >= line[:-1]).all())  # still a ramp: nothing mirrored or shuffled


def test_bicubic_overshoot_is_clamped_not_wrapped():
    """Bicubic rings past 0 and 255 at a hard edge; uint8 must clamp those values, not wrap them round."""
    step = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    step[..., 4:] = 255
    out = eval_pixels(step, Preprocess(32, interpolation="bicubic"))[0, 0]
    assert int(out[:, :12].max()) < 128 and int(out[:, 20:].min()) > 128  # dark stays dark, light stays light
    assert int(out.min()) == 0 and int(out.max()) == 255


def test_preprocess_records_are_exact_and_checked():
    p = Preprocess(64, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5], crop_pct=0.875, interpolation="bicubic")
    assert Preprocess.from_dict(p.to_dict()) == p and p.mean == (0.1, 0.2, 0.3)
    with pytest.raises(ValueError, match=r"missing \['resize_mode'\]"):
        Preprocess.from_dict({k: v for k, v in p.to_dict().items() if k != "resize_mode"})
    with pytest.raises(ValueError, match="Unknown interpolation 'lanczos'"):
        Preprocess(64, interpolation="lanczos")
    with pytest.raises(ValueError, match=r"crop_pct must be in \(0, 1\]"):
        Preprocess(64, crop_pct=1.2)


def test_describe_says_what_is_done_to_a_photo():
    """The sentence written into exported files' sidecars and the training log."""
    assert Preprocess(64, crop_pct=0.9, interpolation="bicubic").describe() == (
        "RGB, shorter side resized to 71, centre 64x64 crop (bicubic), then (pixel / 255 - mean [0.0, 0.0, 0.0]) "
        "/ std [1.0, 1.0, 1.0]"
    )
    assert Preprocess(64, resize_mode="squash").describe().startswith("RGB, resized to 64x64 (bilinear), then")
    assert Preprocess(64, crop_pct=0.5, resize_mode="squash").describe().startswith(
        "RGB, resized to 128x128, centre 64x64 crop (bilinear)"
    )


def test_preprocess_defaults_and_every_refusal():
    p = Preprocess(8)
    assert (p.mean, p.std, p.crop_pct, p.interpolation, p.resize_mode) == (
        (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0, "bilinear", "shorter"
    )  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.input_size = 9  # a model's preprocessing is a value: change it with dataclasses.replace
    assert Preprocess(8, std=[0.5, 0.5, 0.5]).std == (0.5, 0.5, 0.5)  # lists from YAML and JSON become tuples
    for kwargs, message in [
        ({"input_size": 0}, "The input size must be 1 pixel or more, not 0"),
        ({"crop_pct": 0.0}, r"crop_pct must be in \(0, 1\], not 0.0"),
        ({"resize_mode": "fit"}, "Unknown resize mode 'fit'; choose shorter, squash"),
        ({"interpolation": "area"}, "Unknown interpolation 'area'; choose bilinear, bicubic, nearest"),
        ({"std": (1.0, 1.0, 0.0)}, "mean and std take three values each, std above 0"),
        ({"mean": (0.0, 0.0)}, "mean and std take three values each"),
        ({"std": (1.0, 1.0)}, "mean and std take three values each"),
    ]:
        with pytest.raises(ValueError, match=f"^{message}"):
            Preprocess(**{"input_size": 8, **kwargs})


MODES = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2, "P": 0, "CMYK": 4, "I;16": 0}


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    mode=st.sampled_from(sorted(MODES)),
    size=st.integers(1, 48),
    crop_pct=st.sampled_from([0.5, 0.875, 1.0]),
    resize_mode=st.sampled_from(["shorter", "squash"]),
    interpolation=st.sampled_from(["bilinear", "bicubic", "nearest"]),
)
def test_any_image_file_becomes_the_input_size_and_keeps_a_flat_colour(
    tmp_path_factory, height, width, mode, size, crop_pct, resize_mode, interpolation
):
    """Any size, mode and geometry: the pixels are uint8 [3, S, S], and a flat grey image stays that grey
    (the resampling kernels sum to one, whatever the scale)."""
    value = 102  # in the web palette that mode P quantizes to, so no dithering makes it uneven
    rgb = Image.new("RGB", (width, height), (value,) * 3)
    image = rgb.convert("I;16") if mode == "I;16" else rgb.convert(mode) if mode != "CMYK" else rgb.convert("CMYK")
    path = tmp_path_factory.mktemp("img") / ("img.tif" if mode in ("CMYK", "I;16") else "img.png")
    image.save(path)
    p = Preprocess(size, crop_pct=crop_pct, resize_mode=resize_mode, interpolation=interpolation)
    pixels = load_eval_pixels(path, p)
    assert pixels.shape == (3, size, size) and pixels.dtype == torch.uint8
    expected = np.asarray(Image.open(path).convert("RGB"))[0, 0] if mode not in ("I;16",) else None
    if expected is not None:  # I;16 is stretched to its own range: a flat image has none
        assert (pixels == torch.from_numpy(expected.copy()).view(3, 1, 1)).all()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    make_image_folder(root / "train", per_class=6, broken=False)
    make_image_folder(root / "val", per_class=4, broken=True)
    return root


def test_predict_eval_and_export_see_the_same_pixels(folder, tmp_path):
    """The same file gives the same uint8 pixels through vitkit predict's Classifier, evaluation (training's
    validation pass and vitkit eval), export's verification, and export's int8 calibration."""
    from safetensors.torch import save_file

    from vitkit.checkpoint import save_checkpoint
    from vitkit.inference import Classifier

    p = Preprocess(48, crop_pct=0.875, interpolation="bicubic", resize_mode="shorter")
    listing = list_data(str(folder))
    val, report = eval_set(listing.val, p)
    assert len(report.skipped) == 3 and len(val) == 8

    model = vitkit.create_model("vit_cifar", num_classes=2, image_size=48)
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    meta = {"model": "vit_cifar", "model_args": {"image_size": 48}, "class_names": listing.class_names,
            "preprocess": p.to_dict(), "data": {"spec": str(folder), "val_fraction": 0.1, "split_seed": 0}}  # fmt: skip
    save_checkpoint(tmp_path, "best", model.state_dict(), meta)
    classifier = Classifier(tmp_path, device="cpu")
    readable = [path for path in listing.val.paths if classifier.pixels(path) is not None]
    assert torch.equal(torch.stack([classifier.pixels(path) for path in readable]), val.images)

    exported = export_data(str(folder), listing.class_names, p, max_val=1000, max_calibration=1000)
    assert torch.equal(exported.val, val.images.float()) and np.array_equal(exported.labels, val.labels.numpy())
    train, _ = eval_set(listing.train, p)
    calibration = exported.calibration.to(torch.uint8)
    assert len(calibration) == len(train) == 12
    # calibration takes the training files in a random order: the same set of pixel arrays
    assert sorted(map(bytes, calibration.flatten(1).numpy())) == sorted(map(bytes, train.images.flatten(1).numpy()))


def test_the_deployed_model_folds_the_normalisation_in():
    """An exported file takes eval_pixels as they are (0-255) and must compute what the model computes on the
    normalised pixels, for a mean and std that are not 0 and 1."""
    from tests.conftest import randomize_

    # a ViT: its LayerNorms keep every logit sensitive to the input, which a random MobileViT in eval mode
    # (BatchNorm on arbitrary statistics) is not
    model = randomize_(vitkit.create_model("vit_cifar", num_classes=4, image_size=36), scale=0.2).eval()
    model.preprocess = dataclasses.replace(model.preprocess, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    pixels = torch.randint(0, 256, (3, 3, 36, 36), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(normalize(pixels, model.preprocess))
        unnormalised = model(pixels.float() / 255)  # what a file without the fold would compute
        nchw = DeployModel(model, "nchw")(pixels.float())
        nhwc = DeployModel(model, "nhwc")(pixels.float().permute(0, 2, 3, 1))
    assert (expected - unnormalised).abs().max() > 0.1, "the test could not tell a missing normalisation"
    torch.testing.assert_close(nchw, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nhwc, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown layout 'chw'"):
        DeployModel(model, "chw")


def test_normalize_is_the_documented_affine_map():
    p = Preprocess(2, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    pixels = torch.tensor([0, 255, 51, 204], dtype=torch.uint8).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    out = normalize(pixels, p, torch.channels_last)
    expected = (pixels.float() / 255 - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_png_round_trip_of_eval_pixels_is_lossless(tmp_path):
    """What vitkit samples writes and predict reads back: uint8 pixels survive a PNG exactly, so the
    preprocessing, not the file, decides what the model sees."""
    pixels = eval_pixels(torch.randint(0, 256, (1, 3, 30, 40), dtype=torch.uint8), Preprocess(16))
    buffer = io.BytesIO()
    Image.fromarray(pixels[0].permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    path = tmp_path / "x.png"
    path.write_bytes(buffer.getvalue())
    assert torch.equal(load_eval_pixels(path, Preprocess(16)), pixels[0])

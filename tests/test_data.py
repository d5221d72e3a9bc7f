"""Data specs, formats, decoding of odd images, downloads and augmentation, on generated files."""

import functools
import hashlib
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from tests.imagegen import image_bytes, make_cifar10, make_fashion_mnist, make_image_folder
from vitkit.data import download, list_data, load_splits
from vitkit.data.images import decode_files, decode_image, load_square
from vitkit.data.sources import read_idx, stratified_split
from vitkit.data.transforms import BatchTransform, affine
from vitkit.preprocess import Preprocess


def test_digits_is_embedded():
    data = list_data("digits")
    assert len(data.train) + len(data.val) == 1797 and (data.native_side, data.grayscale) == (8, True)
    assert data.class_names == [str(i) for i in range(10)]
    assert data.train.images.shape[1:] == (3, 8, 8) and data.train.images.dtype == torch.uint8
    assert int(data.train.images.max()) == 255  # 0..16 rescaled to 0..255
    assert set(data.val.labels.tolist()) == set(range(10))
    assert (len(data.val), data.val_fraction) == (359, 0.2)  # digits' default share
    half = list_data("digits", val_fraction=0.5)
    assert abs(len(half.val) - 1797 / 2) <= 10 and half.val_fraction == 0.5  # per-class rounding


def test_val_fraction_is_refused_for_data_with_its_own_split(tmp_path, capsys):
    """Fashion-MNIST keeps its test split; a --val-fraction given for it is an error, before any decoding."""
    from vitkit.cli.main import main

    make_fashion_mnist(tmp_path / "fm", n_train=40, n_test=20)
    argv = ["train", "--data", f"fashion-mnist:{tmp_path / 'fm'}", "--output", str(tmp_path / "run")]
    assert main([*argv, "--val-fraction", "0.3", "--epochs", "1"]) == 2
    assert "--val-fraction does not apply to fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before any file was written


def test_fashion_mnist_idx_files(tmp_path):
    make_fashion_mnist(tmp_path, n_train=40, n_test=20)
    data = list_data(f"fashion-mnist:{tmp_path}")
    assert (len(data.train), len(data.val)) == (40, 20)
    assert data.train.images.shape == (40, 3, 28, 28)
    assert data.class_names[9] == "Ankle boot"
    expected = read_idx(tmp_path / "train-images-idx3-ubyte.gz")[3]
    assert torch.equal(data.train.images[3, 1], torch.from_numpy(expected))


def test_truncated_idx_file_is_reported(tmp_path):
    make_fashion_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    import gzip

    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:1000]))
    with pytest.raises(ValueError, match="truncated"):
        list_data(f"fashion-mnist:{tmp_path}")


def test_cifar10_batches(tmp_path):
    make_cifar10(tmp_path / "cifar-10-batches-py", per_batch=20, batches=2)
    data = list_data(f"cifar10:{tmp_path}")
    assert (len(data.train), len(data.val)) == (40, 20)
    assert data.train.images.shape == (40, 3, 32, 32)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0]
    # the row is 1024 red values, then green, then blue, each row-major
    assert torch.equal(data.train.images[0], torch.from_numpy(raw.reshape(3, 32, 32)))


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickle_with_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, f)
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        list_data(f"cifar10:{folder}")


def test_folder_with_every_mode_and_broken_files(tmp_path):
    written = make_image_folder(tmp_path / "pets", per_class=12)
    listing = list_data(str(tmp_path / "pets"), val_fraction=0.25)
    assert listing.grayscale is False and 24 <= listing.native_side <= 90  # sides 20..25 by 24..101
    data = load_splits(listing, Preprocess(32), 40)
    assert data.class_names == ["cats", "dogs"]
    assert len(data.train) + len(data.val) == written["good"]
    skipped = [p for r in data.reports for p in r.skipped]
    assert sorted(os.path.basename(p) for p in skipped) == ["empty.png", "notes.jpg", "truncated.jpg"]
    assert "3 unreadable files skipped" in data.describe()
    assert data.train.images.shape[1:] == (3, 40, 40) and data.val.images.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize(
    "mode, fmt", [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("LA", "PNG")]
)
def test_every_mode_becomes_rgb(tmp_path, mode, fmt):
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(image_bytes(mode, (30, 20), fmt))
    array = decode_image(path)
    assert array.shape == (20, 30, 3) and array.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(path)
    assert (decode_image(path) == 255).all()


def test_sixteen_bit_keeps_its_range(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 65535], [1000, 30000]], dtype=np.uint16)).save(path)
    array = decode_image(path)
    assert array[0, 0, 0] == 0 and array[0, 1, 0] == 255


def test_explicit_train_and_val_folders(tmp_path):
    make_image_folder(tmp_path / "train", per_class=6, broken=False)
    make_image_folder(tmp_path / "val", per_class=3, broken=False)
    data = list_data(f"folder:{tmp_path}")
    assert (len(data.train), len(data.val)) == (12, 6)


@pytest.mark.parametrize(
    "setup, error, match",
    [
        (lambda p: None, FileNotFoundError, "does not exist"),
        (lambda p: p.mkdir(), ValueError, "holds no images"),
        (lambda p: make_image_folder(p, classes=("only",), per_class=3, broken=False), ValueError, "one class only"),
    ],
)
def test_folder_errors_are_one_sentence(tmp_path, setup, error, match):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(error, match=match) as info:
        list_data(str(root))
    assert str(info.value).count("\n") == 0


def test_unknown_spec():
    with pytest.raises(ValueError, match="Unknown data 'imagenet'"):
        list_data("imagenet")


def test_stratified_split_is_seeded_and_covers_every_class():
    labels = np.repeat(np.arange(5), 7)
    a = stratified_split(labels, 0.1, seed=3)
    b = stratified_split(labels, 0.1, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert set(labels[a[1]]) == set(range(5)) and len(np.intersect1d(*a)) == 0


def test_parallel_decoding_matches_serial(tmp_path):
    make_image_folder(tmp_path, per_class=40, broken=True)
    paths = sorted(str(p) for p in tmp_path.rglob("*.*"))
    load = functools.partial(load_square, side=24, p=Preprocess(24))
    serial = decode_files(paths, load, workers=1)
    parallel = decode_files(paths, load, workers=2)
    assert torch.equal(serial[0], parallel[0]) and np.array_equal(serial[1], parallel[1])
    assert len(parallel[2].skipped) == 3


def test_download_verifies_checksums(tmp_path):
    source = tmp_path / "server" / "train-images-idx3-ubyte.gz"
    source.parent.mkdir()
    source.write_bytes(b"pretend data")
    good = download.RemoteFile(source.as_uri(), md5=hashlib.md5(b"pretend data").hexdigest())
    path = download.download_file(good, tmp_path / "cache")
    assert path.read_bytes() == b"pretend data"
    bad = download.RemoteFile(source.as_uri(), sha256="0" * 64)
    with pytest.raises(ValueError, match="wrong checksum"):
        download.download_file(bad, tmp_path / "cache2")
    assert not any((tmp_path / "cache2").iterdir())  # nothing half-written left behind


def flowers_archive(tmp_path) -> list[download.RemoteFile]:
    """A flower_photos.tgz laid out as tf_flowers' (two classes), as the remote list ``fetch`` takes."""
    folder = tmp_path / "flower_photos"
    make_image_folder(folder, per_class=2, broken=False)
    archive = tmp_path / "flower_photos.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="flower_photos")
    return [download.RemoteFile(archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest())]


def test_fetch_unpacks_an_archive(tmp_path):
    remote = flowers_archive(tmp_path)
    root = download.fetch("flowers", tmp_path / "cache", remote=remote)
    assert root == tmp_path / "cache" / "flowers" / "flower_photos"
    assert sorted(p.name for p in root.iterdir()) == ["cats", "dogs"]
    assert download.fetch("flowers", tmp_path / "cache", remote=[]) == root  # present: no second download


def test_a_fetch_removes_what_a_killed_one_left(tmp_path):
    """A process killed mid-download leaves a .part file, mid-unpack an .extract- folder: the next fetch
    (holding the folder's lock, so no other process is writing them) removes both."""
    remote = flowers_archive(tmp_path)
    cache = tmp_path / "cache" / "flowers"
    (cache / ".extract-k1ll3d" / "flower_photos").mkdir(parents=True)
    (cache / ".flower_photos.tgz.k1ll3d.part").write_bytes(b"half an archive")
    root = download.fetch("flowers", tmp_path / "cache", remote=remote)
    assert sorted(p.name for p in root.iterdir()) == ["cats", "dogs"]
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "flower_photos"]


def test_download_failure_is_one_sentence(tmp_path):
    missing = download.RemoteFile((tmp_path / "nope.gz").as_uri())
    with pytest.raises(ValueError, match="Could not download"):
        download.download_file(missing, tmp_path / "cache")


@pytest.mark.parametrize("augment", ["resize-crop-flip", "keras-vit", "random-resized-crop", "none"])
def test_augmentations_shape_range_and_seeding(augment):
    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    transform = BatchTransform(Preprocess(32, mean=(0.5,) * 3, std=(0.5,) * 3), augment=augment, train_side=40)
    a = transform(images, torch.Generator().manual_seed(1))
    b = transform(images, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1.0 - 1e-5 and a.max() <= 1.0 + 1e-5


def asymmetric_batch(n: int) -> torch.Tensor:
    """[n, 3, 8, 8] uint8: black left half, white right half, so a flipped image is told apart exactly."""
    images = torch.zeros(n, 3, 8, 8, dtype=torch.uint8)
    images[..., 4:] = 255
    return images


def flipped_fraction(out: torch.Tensor) -> float:
    left, right = out[..., : out.shape[-1] // 2].mean((1, 2, 3)), out[..., out.shape[-1] // 2 :].mean((1, 2, 3))
    return float((left > right).float().mean())


@pytest.mark.parametrize("augment", ["resize-crop-flip", "keras-vit", "random-resized-crop"])
def test_training_flips_half_the_images(augment):
    # 4,000 draws of a fair coin: 2,000 +- 31.6; the bounds are 5 standard deviations (a false failure about
    # once in 1.7 million seeds, and the seed is fixed)
    out = BatchTransform(Preprocess(8), augment=augment)(asymmetric_batch(4000), torch.Generator().manual_seed(0))
    assert abs(flipped_fraction(out) - 0.5) < 5 * 0.5 / 4000**0.5
    # --hflip false: no image mirrored, and every other random choice the same as with flips
    kept = BatchTransform(Preprocess(8), augment=augment, hflip=False)(
        asymmetric_batch(4000), torch.Generator().manual_seed(0)
    )
    assert flipped_fraction(kept) == 0.0


def test_augment_none_is_evaluation_and_never_flips():
    from vitkit.preprocess import eval_pixels, normalize

    p = Preprocess(6, mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7), crop_pct=0.75)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = BatchTransform(p, augment="none")(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, normalize(eval_pixels(images, p), p))
    assert flipped_fraction(BatchTransform(Preprocess(8), augment="none")(asymmetric_batch(64), torch.Generator())) == 0


def test_identity_affine_is_identity():
    x = torch.rand(2, 3, 16, 16)
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    torch.testing.assert_close(affine(x, theta, 16), x, atol=1e-5, rtol=0)


def test_transform_returns_the_models_memory_order():
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    out = BatchTransform(Preprocess(32), augment="resize-crop-flip", train_side=40, channels_last=True)(
        images, torch.Generator().manual_seed(0)
    )
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert BatchTransform(Preprocess(32))(images, torch.Generator()).is_contiguous()


@pytest.mark.parametrize("mode", ["shorter", "squash"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_stored_squares_are_within_a_grey_level_of_the_float_resize(mode, interpolation):
    import sklearn.datasets

    from vitkit.data.images import as_batch, square_uint8
    from vitkit.preprocess import resize_square, to_uint8

    photo = np.asarray(Image.open(sklearn.datasets.__path__[0] + "/images/china.jpg").convert("RGB"))  # 640x427
    for side in (256, 97):
        fast = square_uint8(photo, side, mode, interpolation)
        exact = to_uint8(resize_square(as_batch(photo).float(), side, mode, interpolation))[0]
        assert fast.shape == exact.shape == (3, side, side) and fast.is_contiguous()
        diff = (fast.int() - exact.int()).abs()
        assert diff.max() <= {"bilinear": 1, "bicubic": 3, "nearest": 0}[interpolation] and diff.float().mean() < 0.2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same bits on any number of threads: workers run one, the main process more
    try:
        one = square_uint8(photo, 97, mode, interpolation)
    finally:
        torch.set_num_threads(max(2, threads))
    assert torch.equal(one, square_uint8(photo, 97, mode, interpolation))

"""``vitkit pack``: shards the webdataset library reads, an index that finds every image without parsing tar,
unreadable files reported, an interrupted pack continued to the same result, and ``--data PACK`` read as a
folder is."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.imagegen import make_image_folder
from vitkit.cli.main import main
from vitkit.data import list_data, load_splits
from vitkit.data import pack as packing
from vitkit.preprocess import Preprocess


@pytest.fixture
def photos(tmp_path) -> Path:
    """Generated images in every mode (and 3 unreadable files) in two classes, and scikit-learn's two sample
    photos (427x640 JPEGs) in a third."""
    from sklearn.datasets import load_sample_image

    root = tmp_path / "photos"
    make_image_folder(root, per_class=7)
    (root / "scenes").mkdir()
    for name in ("china.jpg", "flower.jpg"):
        Image.fromarray(load_sample_image(name)).save(root / "scenes" / name, quality=95)
    return root


def test_pack_writes_shards_the_webdataset_library_reads(photos, tmp_path, capsys):
    import webdataset as wds

    out = tmp_path / "packed"
    assert main(["pack", str(photos), str(out), "--max-side", "128", "--shard-images", "5", "--workers", "1"]) == 0
    said = capsys.readouterr()
    assert f"packed 16 images into {out}" in said.out
    assert "3 unreadable files skipped" in said.err and "truncated.jpg" in said.err
    record = json.loads((out / "pack.json").read_text())
    assert record["classes"] == ["cats", "dogs", "scenes"] and record["splits"]["all"]["per_class"] == [7, 7, 2]
    assert len(record["skipped"]) == 3 and len(record["splits"]["all"]["shards"]) == 4  # 19 files, 5 a shard

    shards = [str(out / name) for name in record["splits"]["all"]["shards"]]
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil"))
    assert len(samples) == 16 and all(set(s) >= {"__key__", "jpg", "cls"} for s in samples)
    assert sorted(s["cls"] for s in samples) == [0] * 7 + [1] * 7 + [2] * 2
    scenes = [s["jpg"] for s in samples if s["cls"] == 2]
    assert sorted(im.size for im in scenes) == [(128, 85), (128, 85)]  # 640x427 photos, longer side to 128

    # the index finds each image's bytes directly: the same bytes the tar holds under that key
    classes, splits = packing.read_pack(out)
    images, labels = splits["all"]
    with tarfile.open(shards[0]) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        assert images[0].read() == tar.extractfile(members[0]).read()
        assert images[0].offset == members[0].offset_data
    assert labels.tolist() == sorted(labels.tolist())  # class folders in order, as listed


def test_data_spec_reads_a_pack_as_it_reads_the_folder(photos, tmp_path):
    out = tmp_path / "packed"
    packing.pack(photos, out, max_side=512, shard_images=4, workers=1, log=lambda *a: None)
    from_pack, from_folder = list_data(str(out)), list_data(str(photos))
    assert from_pack.class_names == from_folder.class_names
    assert len(from_pack.train) + len(from_pack.val) == 16  # the folder lists 19 files; 3 were unreadable
    splits = load_splits(from_pack, Preprocess(32), 32, workers=1)
    assert len(splits.train) + len(splits.val) == 16 and not any(r.skipped for r in splits.reports)
    # the pack's JPEG is the photo re-encoded at quality 90: close to the original pixels, not equal
    original = load_splits(from_folder, Preprocess(32), 32, workers=1)
    assert splits.train.images.shape[1:] == original.train.images.shape[1:]


def test_an_interrupted_pack_continues_to_the_same_result(photos, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    packing.pack(photos, straight, shard_images=3, workers=1, log=lambda *a: None)

    out = tmp_path / "interrupted"
    real_write, written = packing._write_shard, []

    def write_then_stop(*args, **kwargs):
        if len(written) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the 4th shard is being written
        written.append(args[1])
        return real_write(*args, **kwargs)

    monkeypatch.setattr(packing, "_write_shard", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        packing.pack(photos, out, shard_images=3, workers=1, log=lambda *a: None)
    assert not (out / "pack.json").exists() and sorted(p.name for p in out.glob("*.tar")) == [
        f"all-{k:06d}.tar" for k in range(3)
    ]
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()

    with pytest.raises(ValueError, match="packed with other options"):
        packing.pack(photos, out, shard_images=3, quality=70, workers=1, log=lambda *a: None)
    result = packing.pack(photos, out, shard_images=3, workers=1, log=lambda *a: None)
    assert result.reused_shards == 3 and result.counts == {"all": 16}
    for name in ("all.index.npz",):
        a, b = np.load(straight / name), np.load(out / name)
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    for shard in sorted(straight.glob("*.tar")):
        assert (out / shard.name).read_bytes() == shard.read_bytes()  # byte for byte
    with pytest.raises(ValueError, match="already holds a finished pack"):
        packing.pack(photos, out, workers=1, log=lambda *a: None)


def test_a_source_with_train_and_val_keeps_its_split(tmp_path):
    source = tmp_path / "split"
    make_image_folder(source / "train", per_class=4, broken=False)
    make_image_folder(source / "val", per_class=2, broken=False)
    out = tmp_path / "packed"
    result = packing.pack(source, out, workers=1, log=lambda *a: None)
    assert result.counts == {"train": 8, "val": 4}
    listing = list_data(str(out))
    assert (len(listing.train), len(listing.val), listing.val_fraction) == (8, 4, None)


def test_pack_refusals_are_one_sentence(photos, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["pack", str(photos), str(blocker / "out")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["pack", str(photos), str(tmp_path / "o"), "--quality", "0"]) == 2
    assert "--quality must be from 1 to 100, not 0." in capsys.readouterr().err
    assert main(["pack", str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Image folder" in err and "nowhere does not exist" in err and err.count("\n") == 1


def test_encode_keeps_small_images_and_decodes_fully(tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(small)
    data = packing.encode_image(str(small), max_side=512, quality=90)
    assert Image.open(io.BytesIO(data)).size == (40, 30)
    truncated = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (0, 90, 0)).save(buffer, format="JPEG")
    truncated.write_bytes(buffer.getvalue()[:-400])  # the header opens; only a full decode finds the damage
    assert isinstance(packing.encode_image(str(truncated), max_side=512, quality=90), str)

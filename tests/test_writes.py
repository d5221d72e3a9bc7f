"""Writes that fail (full disk, read-only folder, a file where a folder should be): one sentence, exit code 2,
and the run folder left consistent: the last complete checkpoint and its JSON intact, no temporary files."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import vitkit
from vitkit.checkpoint import load_model, save_checkpoint
from vitkit.cli.main import main
from vitkit.errors import EXIT_USER_ERROR


@pytest.fixture
def mount(tmp_path):
    """A tmpfs of a given size (and read-only if asked); skipped where mounting is impossible (not root, or a
    container without the capability), which the skip reason says."""
    mounted = []

    def make(size: str, readonly: bool = False) -> Path:
        where = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
        where.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip() or 'mount failed'})")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


SMALL = {"image_size": 32, "dim": 32, "depth": 1, "num_heads": 2}
BIG = {"image_size": 32}


def checkpoint(model, args: dict, folder: Path) -> Path:
    meta = {
        "model": "vit_cifar",
        "model_args": args,
        "class_names": [str(i) for i in range(10)],
        "preprocess": model.preprocess.to_dict(),
        "data": {"spec": "digits", "val_fraction": 0.1, "split_seed": 0},
    }
    return save_checkpoint(folder, "last", model.state_dict(), meta, state={"epoch": 1})


def test_a_full_disk_keeps_the_previous_checkpoint_whole(mount):
    small = vitkit.create_model("vit_cifar", num_classes=10, **SMALL)
    big = vitkit.create_model("vit_cifar", num_classes=10, **BIG)
    disk = mount("600k")
    checkpoint(small, SMALL, disk)
    before = {p.name: p.read_bytes() for p in disk.iterdir()}
    with pytest.raises(OSError) as e:
        checkpoint(big, BIG, disk)  # 1.1 MB of weights: does not fit
    assert e.value.errno == 28  # ENOSPC
    assert {p.name: p.read_bytes() for p in disk.iterdir()} == before  # nothing renamed, no temporary left
    model, meta = load_model(disk / "last.json")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), small.state_dict().values()))


def test_training_onto_a_full_disk_is_one_sentence(mount, capsys):
    disk = mount("300k")
    code = main(["train", "--model", "vit_cifar", "--data", "digits", "--image-size", "32", "--epochs", "1",
                 "--output", str(disk / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and err.count("\n") == 1 and "Traceback" not in err
    assert "No space left on device" in err and str(disk / "run") in err
    assert not list((disk / "run").glob("*.tmp")) and not list((disk / "run").glob(".*.tmp"))
    assert not (disk / "run" / "last.json").exists()  # no JSON without its weights


def test_export_refuses_a_destination_it_cannot_write_before_converting(tmp_path, mount, capsys):
    from tests.serving import write_checkpoint

    run = write_checkpoint(tmp_path / "run")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    assert main(["export", str(run), "--format", "onnx", "-o", str(blocker / "model.onnx")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert f"{blocker} is a file, not a folder" in err and err.count("\n") == 1
    readonly = mount("1m", readonly=True)
    assert main(["export", str(run), "--format", "onnx", "-o", str(readonly / "model.onnx")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "not writable" in err or "Read-only file system" in err
    assert list(readonly.iterdir()) == []


def test_training_output_under_a_file_is_refused_before_decoding(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code = main(["train", "--data", "digits", "--output", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and "is a file, not a folder" in err and "decoded" not in err


def test_a_download_onto_a_full_or_read_only_disk_is_one_sentence_and_leaves_nothing(
    tmp_path, mount, monkeypatch, capsys
):
    import hashlib
    import os

    from vitkit.data import download

    archive = tmp_path / "flower_photos.tgz"
    archive.write_bytes(os.urandom(400_000))  # incompressible: does not fit a 200k disk
    remote = [download.RemoteFile(archive.as_uri(), sha256=hashlib.sha256(archive.read_bytes()).hexdigest())]
    monkeypatch.setitem(download.REMOTE, "flowers", remote)
    for disk, reason in ((mount("200k"), "No space left on device"), (mount("200k", readonly=True), "Read-only")):
        assert main(["download", "flowers", "--dir", str(disk)]) == EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert reason in err and f"Could not write into {disk}" in err and err.count("\n") == 1, err
        assert "VITKIT_CACHE" in err  # the way out
        assert not [p for p in disk.rglob("*") if p.name != ".lock" and p.is_file()]  # no partial file left


def test_a_pack_onto_a_full_disk_is_one_sentence_and_keeps_only_whole_shards(tmp_path, mount, capsys):
    import json

    from PIL import Image

    source = tmp_path / "photos"
    for c in ("a", "b"):
        (source / c).mkdir(parents=True)
        for i in range(6):  # noise does not compress: about 40 kB a JPEG
            noise = np.random.default_rng(i).integers(0, 256, (160, 160, 3), dtype=np.uint8)
            Image.fromarray(noise).save(source / c / f"{i}.png")
    disk = mount("150k")
    code = main(["pack", str(source), str(disk / "out"), "--shard-images", "2", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and "No space left on device" in err and err.count("\n") == 1
    out = disk / "out"
    assert not (out / "pack.json").exists() and not list(out.glob(".*.tmp"))
    shards = sorted(out.glob("*.tar"))
    assert shards and all(json.loads(s.with_suffix(".json").read_text())["keys"] for s in shards)  # each whole

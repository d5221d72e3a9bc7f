"""Training images read lazily by worker processes: the same batches whatever the number of workers, bad files
met at training time skipped and counted, too many of them a clear stop, and a set over the memory budget
trained through this path."""

import json

import pytest
import torch

import vitkit
from tests.imagegen import make_image_folder
from vitkit.data import list_data
from vitkit.data.stream import FileTable, StreamSet
from vitkit.preprocess import Preprocess


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pets")
    make_image_folder(root, classes=("cats", "dogs", "birds"), per_class=14)  # and three unreadable files
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    make_image_folder(root, classes=("cats", "dogs", "birds"), per_class=14, broken=False)
    return root


def test_workers_0_1_2_give_the_same_batches(folder):
    listing = list_data(str(folder), 0.1)
    stream = StreamSet(listing.train.paths, listing.train.labels, 40, Preprocess(32))
    batches = list(torch.randperm(len(stream), generator=torch.Generator().manual_seed(0)).split(8))
    runs = [list(stream.batches(batches, workers)) for workers in (0, 1, 2)]
    for a, b in zip(runs[0], runs[1] + runs[2][: len(runs[1])]):
        assert torch.equal(a.images, b.images) and torch.equal(a.index, b.index) and a.skipped == b.skipped
    assert len(runs[2]) == len(runs[0]) == len(batches)
    skipped = [name for batch in runs[0] for name in batch.skipped]
    assert sorted(n.rsplit("/", 1)[-1] for n in skipped) == sorted(  # the broken files in the training split
        n.rsplit("/", 1)[-1] for n in listing.train.paths if n.endswith(("truncated.jpg", "empty.png", "notes.jpg"))
    )
    read = torch.cat([batch.index for batch in runs[0]])
    assert len(read) + len(skipped) == len(stream)  # every file either read or reported


def test_a_set_over_the_memory_budget_trains_through_the_disk_cache_or_the_stream(clean, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    common = dict(model="mobilevit_xxs", data=str(clean), image_size=32, epochs=2, batch_size=8, workers=2)
    on_disk = vitkit.train(**common, memory_budget=1e-6, output=str(tmp_path / "disk"))
    said = capsys.readouterr().out
    assert "training images mapped from the disk cache" in said and "memory budget" in said
    entries = sorted((tmp_path / "cache" / "decoded").iterdir())
    assert len(entries) == 2 and all((e / "meta.json").is_file() for e in entries)  # train and val splits
    monkeypatch.setattr("vitkit.data.sources.has_room", lambda folder, needed: False)  # the disk filled up since
    vitkit.train(**{**common, "epochs": 1}, memory_budget=1e-6, output=str(tmp_path / "again"))
    assert "mapped from the disk cache" in capsys.readouterr().out  # the entry built before is used
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "empty-cache"))  # no entry and no room: stream
    streamed = vitkit.train(**common, memory_budget=1e-6, output=str(tmp_path / "stream"))
    said = capsys.readouterr().out
    assert "training images read from the files every epoch" in said and "free space" in said
    in_memory = vitkit.train(**common, output=str(tmp_path / "memory"))
    assert "training images in memory" in capsys.readouterr().out
    # the same pixels, order and augmentation: the same run as in memory, loss for loss
    for a, b, c in zip(on_disk.history, streamed.history, in_memory.history):
        assert a["train_loss"] == pytest.approx(c["train_loss"], abs=1e-5) and a["val_top1"] == c["val_top1"]
        assert b["train_loss"] == pytest.approx(c["train_loss"], abs=1e-5) and b["val_top1"] == c["val_top1"]


def test_the_disk_cache_is_built_once_and_holds_what_memory_would(folder, tmp_path, monkeypatch):
    from vitkit.data import load_splits

    listing = list_data(str(folder), 0.1)
    p = Preprocess(32, crop_pct=0.875)
    root = tmp_path / "cache"
    monkeypatch.setenv("VITKIT_CACHE", str(root))
    memory = load_splits(listing, p, 40, cache="memory")
    disk = load_splits(listing, p, 40, cache="disk")
    assert "mapped from the disk cache" in disk.where
    assert torch.equal(disk.train.images, memory.train.images) and torch.equal(disk.train.labels, memory.train.labels)
    assert torch.equal(disk.val.images, memory.val.images) and torch.equal(disk.val.labels, memory.val.labels)
    assert [r.skipped for r in disk.reports] == [r.skipped for r in memory.reports]  # the same files counted
    assert sum(len(r.skipped) for r in disk.reports) == 3
    stamps = {f: f.stat().st_mtime_ns for f in root.rglob("images.u8")}

    def never(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr("vitkit.data.diskcache.decode_chunks", never)
    again = load_splits(listing, p, 40, cache="disk")  # a second run (or another rank) maps the same files
    assert torch.equal(again.train.images, memory.train.images)
    assert stamps == {f: f.stat().st_mtime_ns for f in root.rglob("images.u8")}
    other = load_splits(listing, Preprocess(32, crop_pct=1.0), 40, cache="memory")
    assert not torch.equal(other.val.images, memory.val.images)  # so another crop must not share the entry
    with pytest.raises(AssertionError, match="decoded again"):
        load_splits(listing, Preprocess(32, crop_pct=1.0), 40, cache="disk")


def test_a_killed_disk_cache_build_leaves_no_entry_and_is_rebuilt(clean, tmp_path, monkeypatch):
    from vitkit.data import diskcache, load_splits

    listing = list_data(str(clean), 0.1)
    p = Preprocess(32)
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    real = diskcache.decode_chunks

    def killed_midway(*args, **kwargs):
        chunks = real(*args, **kwargs)
        yield next(chunks)
        raise KeyboardInterrupt

    monkeypatch.setattr(diskcache, "decode_chunks", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        load_splits(listing, p, 40, cache="disk")
    leftovers = [f.name for f in (tmp_path / "cache").rglob("*") if f.is_file() and f.name != ".lock"]
    assert leftovers == []  # nothing that a later run could take for a finished entry
    monkeypatch.setattr(diskcache, "decode_chunks", real)
    entry = next((tmp_path / "cache" / "decoded").iterdir())
    (entry / ".images.u8.left-by-sigkill.tmp").write_bytes(b"\0" * 100)  # what a SIGKILL mid-build leaves
    disk = load_splits(listing, p, 40, cache="disk")
    assert not list(entry.glob("*.tmp"))  # removed under the lock by the next build
    assert torch.equal(disk.train.images, load_splits(listing, p, 40, cache="memory").train.images)


def test_bad_files_met_while_training_are_skipped_and_counted_every_epoch(folder, tmp_path, capsys):
    result = vitkit.train(model="mobilevit_xxs", data=str(folder), image_size=32, epochs=2, batch_size=8,
                          cache="stream", max_unreadable=0.2, output=str(tmp_path / "run"))  # fmt: skip
    listing = list_data(str(folder), 0.1)
    broken = sum(p.endswith(("truncated.jpg", "empty.png", "notes.jpg")) for p in listing.train.paths)
    assert broken >= 1 and [h["unreadable"] for h in result.history] == [broken, broken]
    assert f"({broken} unreadable files skipped)" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())[0]["unreadable"] == broken


def test_too_many_unreadable_files_stop_the_run_in_one_sentence(folder, tmp_path):
    with pytest.raises(
        ValueError, match=r"unreadable in epoch 1 \(more than --max-unreadable 0\).*truncated|empty|notes"
    ):
        vitkit.train(model="mobilevit_xxs", data=str(folder), image_size=32, epochs=1, batch_size=8, cache="stream",
                     max_unreadable=0.0, output=str(tmp_path / "run"))  # fmt: skip


def test_the_file_table_holds_paths_and_pack_references_without_python_objects():
    from vitkit.data.images import PackedImage

    paths = [f"/data/train/class_{i % 1000}/image_{i:07d}.JPEG" for i in range(20_000)]
    table = FileTable(paths)
    assert [table[i] for i in (0, 12_345, 19_999)] == [paths[0], paths[12_345], paths[19_999]]
    assert table.text.nbytes + table.ends.nbytes < 1.2 * sum(len(p) for p in paths) + 8 * len(paths)
    packed = [PackedImage(f"/p/shard-{i // 1000:05d}.tar", 512 * i, 4000 + i, f"key{i}") for i in range(3000)]
    assert FileTable(packed)[2999] == packed[2999]


def _private_dirty_kib() -> int:
    """Memory this process holds that no other process shares (pages it wrote, including copied-on-write)."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
    return int(fields["Private_Dirty"].split()[0])


def _touch_every_entry(table, pipe) -> None:
    before = _private_dirty_kib()
    total = sum(len(str(table[i])) for i in range(0, len(table), 7))  # a worker reading its share of the index
    pipe.send((_private_dirty_kib() - before, total))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps_rollup"), reason="needs Linux's smaps_rollup")
def test_a_worker_reading_an_index_of_1_28m_files_adds_little_memory():
    """ImageNet's 1.28M training files: a forked worker that reads the FileTable copies almost none of it,
    where one walking a Python list of the same paths copies the pages of every string it touches (their
    reference counts change)."""
    import multiprocessing

    paths = [f"/data/imagenet/train/n{i % 1000:08d}/n{i % 1000:08d}_{i:07d}.JPEG" for i in range(1_281_167)]
    context = multiprocessing.get_context("fork")
    added = {}
    for name, table in (("FileTable", FileTable(paths)), ("list", paths)):
        receive, send = context.Pipe(duplex=False)
        worker = context.Process(target=_touch_every_entry, args=(table, send))
        worker.start()
        added[name], _ = receive.recv()
        worker.join()
    print(f"memory a worker adds reading 1/7 of a 1.28M-file index: {added}")
    assert added["FileTable"] < 16 * 1024  # KiB: a few pages of the interpreter's own, not the index
    assert added["list"] > 4 * added["FileTable"]


@pytest.mark.slow
def test_two_machines_each_holding_only_their_own_shards_train_together(tmp_path):
    """Two torchrun-style processes, each with its own copy of the pack in which the other machine's training
    shards are deleted: both train the same number of steps and meet no missing file."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    from vitkit.data.pack import pack

    source = tmp_path / "photos"
    make_image_folder(source / "train", classes=("cats", "dogs", "birds"), per_class=14, broken=False)
    make_image_folder(source / "val", classes=("cats", "dogs", "birds"), per_class=3, broken=False)
    pack(source, tmp_path / "pack", shard_images=6, log=lambda *a, **k: None)
    shards = sorted((tmp_path / "pack").glob("train-*.tar"))
    assert len(shards) == 7
    for node in (0, 1):  # machine k keeps training shards k, k + 2, ... and every validation shard
        copy = shutil.copytree(tmp_path / "pack", tmp_path / f"machine{node}")
        for i, shard in enumerate(shards):
            if i % 2 != node:
                (copy / shard.name).unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for node in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(node), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}  # fmt: skip
        command = [sys.executable, "-m", "vitkit", "train", "--model", "mobilevit_xxs", "--data", str(tmp_path / f"machine{node}"),
                   "--node-shards", "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--workers", "1",
                   "--output", str(tmp_path / "run")]  # fmt: skip
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "machine 1 of 2 reads its own shards (18 images a process)" in outputs[0]  # 3 or 4 shards of 6: 18 each
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert history[0]["unreadable"] == 0 and history[0]["steps"] == 5  # 18 images in batches of 4, 4, 4, 4, 2


def test_node_shards_refusals_are_one_sentence(tmp_path):
    from vitkit.data.pack import pack
    from vitkit.errors import OptionError

    source = tmp_path / "photos"
    make_image_folder(source / "train", classes=("cats", "dogs"), per_class=8, broken=False)
    make_image_folder(source / "val", classes=("cats", "dogs"), per_class=2, broken=False)
    pack(source, tmp_path / "pack", shard_images=6, log=lambda *a, **k: None)
    pack(source / "train", tmp_path / "nosplit", shard_images=6, log=lambda *a, **k: None)
    common = dict(model="mobilevit_xxs", image_size=32, epochs=1, batch_size=4, workers=1, node_shards=True)
    with pytest.raises(OptionError, match="needs a pack with its own val split"):
        vitkit.train(**common, data=str(tmp_path / "nosplit"), output=str(tmp_path / "a"))
    with pytest.raises(OptionError, match="give --data a `vitkit pack` folder"):
        vitkit.train(**common, data=str(source), output=str(tmp_path / "b"))
    (tmp_path / "pack" / "train-000001.tar").unlink()
    with pytest.raises(OptionError, match=r"machine 0 of 1 .* but train-000001.tar is not here"):
        vitkit.train(**common, data=str(tmp_path / "pack"), output=str(tmp_path / "c"))
    with pytest.raises(OptionError, match="leave out --cache memory"):
        vitkit.train(**common, data=str(tmp_path / "pack"), cache="memory", output=str(tmp_path / "d"))

"""Checkpoints: what they record, how they are found and read back (no training needed), and the import seams."""

import json
import subprocess
import sys

import pytest
import torch

import vitkit
from vitkit.checkpoint import FORMAT, load_model, load_state, read_meta, resolve_checkpoint, save_checkpoint
from vitkit.preprocess import Preprocess
from tests.conftest import as_written_before_v3

PRE = Preprocess(48, mean=(0.1, 0.2, 0.3), std=(0.9, 0.8, 0.7), crop_pct=0.875, interpolation="bicubic")


def write_run(folder, model=None, preprocess=PRE, state=None, name="best", epoch=3):
    model = model or vitkit.create_model("vit_cifar", num_classes=3, image_size=48)
    meta = {
        "model": "vit_cifar",
        "model_args": {"image_size": model.config.image_size},
        "class_names": ["a", "b", "c"],
        "preprocess": preprocess.to_dict(),
        "data": {"spec": "somewhere", "val_fraction": 0.2, "split_seed": 0},
        "epoch": epoch,
    }
    save_checkpoint(folder, name, model.state_dict(), meta, state)
    return model


def test_a_checkpoint_rebuilds_the_model_with_its_own_preprocessing(tmp_path):
    source = write_run(tmp_path).eval()
    model, meta = load_model(tmp_path)
    assert model.preprocess == PRE  # the record, not the preset's (crop 1.0, bilinear, squash)
    assert model.class_names == ["a", "b", "c"] and meta["epoch"] == 3 and meta["_folder"] == str(tmp_path)
    loaded, expected = model.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert not model.training
    assert json.loads((tmp_path / "best.json").read_text())["format"] == FORMAT
    assert not list(tmp_path.glob("*.tmp"))


def test_the_weights_file_names_its_format_and_model(tmp_path):
    from safetensors import safe_open

    write_run(tmp_path / "new" / "run")  # folders that do not exist yet are made
    with safe_open(tmp_path / "new" / "run" / "best.safetensors", "pt") as f:
        header = f.metadata()
    assert (header["format"], header["model"]) == (FORMAT, "vit_cifar")
    assert json.loads(header["vitkit.checkpoint"]) == json.loads((tmp_path / "new" / "run" / "best.json").read_text())


def test_new_weights_beside_the_previous_json_are_described_by_their_own_header(tmp_path):
    """A kill between the renames of one checkpoint write leaves the new weights with the previous JSON: the
    weights' header describes them, and wins."""
    write_run(tmp_path)
    previous_json = (tmp_path / "best.json").read_text()
    write_run(tmp_path, model=vitkit.create_model("vit_cifar", num_classes=3, image_size=32), epoch=4)
    (tmp_path / "best.json").write_text(previous_json)  # as if killed before the JSON's rename
    model, meta = load_model(tmp_path)
    assert meta["epoch"] == 4 and model.config.image_size == 32
    # a JSON edited by hand (same save, another data spec) is read as edited
    write_run(tmp_path, model=vitkit.create_model("vit_cifar", num_classes=3, image_size=32), epoch=5)
    edited = json.loads((tmp_path / "best.json").read_text())
    edited["data"]["spec"] = "elsewhere/"
    (tmp_path / "best.json").write_text(json.dumps(edited))
    assert read_meta(tmp_path)["data"]["spec"] == "elsewhere/" and read_meta(tmp_path)["epoch"] == 5


def test_checkpoint_paths_resolve(tmp_path):
    write_run(tmp_path)
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.json"
    assert resolve_checkpoint(tmp_path / "best.safetensors") == tmp_path / "best.json"
    assert resolve_checkpoint(tmp_path / "best.json") == tmp_path / "best.json"
    (tmp_path / "last.json").write_text((tmp_path / "best.json").read_text())
    (tmp_path / "best.json").unlink()
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.json"  # a run killed before its first best
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no best.json or last.json"):
        resolve_checkpoint(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        resolve_checkpoint(tmp_path / "nope.json")


def test_bad_records_are_one_sentence(tmp_path):
    (tmp_path / "best.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_meta(tmp_path)
    (tmp_path / "best.json").write_text(json.dumps({"format": "something-else/1"}))
    with pytest.raises(ValueError, match=r"is not a vitkit checkpoint \(format 'something-else/1'\)"):
        read_meta(tmp_path)


def test_version_1_checkpoints_are_read_as_they_evaluated(tmp_path):
    """Version 1 recorded every preprocessing field but the resize mode, evaluated by squashing, and kept
    the data spec in the training config."""
    write_run(tmp_path)
    as_written_before_v3(tmp_path / "best.safetensors")
    meta = json.loads((tmp_path / "best.json").read_text())
    preprocess = {k: v for k, v in meta.pop("preprocess").items() if k != "resize_mode"}
    meta.pop("data")
    v1 = {**meta, "format": "vitkit-checkpoint/1", "preprocess": preprocess,
          "config": {"data": "digits", "val_fraction": 0.3}}  # fmt: skip
    (tmp_path / "best.json").write_text(json.dumps(v1))
    model, meta = load_model(tmp_path)
    assert model.preprocess == Preprocess(**{**PRE.to_dict(), "resize_mode": "squash"})
    assert meta["data"] == {"spec": "digits", "val_fraction": 0.2, "split_seed": 0}  # what digits held out then
    # the oldest records have no config and no model_args (the preset's own arguments)
    v1 = {k: v for k, v in v1.items() if k not in ("config", "model_args")}
    v1["preprocess"]["input_size"] = 72
    (tmp_path / "best.json").write_text(json.dumps(v1))
    write_run(tmp_path, model=vitkit.create_model("vit_cifar", num_classes=3), name="unused")
    (tmp_path / "best.safetensors").write_bytes((tmp_path / "unused.safetensors").read_bytes())
    as_written_before_v3(tmp_path / "best.safetensors")
    model, meta = load_model(tmp_path)
    assert meta["data"] == {"spec": None, "val_fraction": 0.1, "split_seed": 0} and model.config.image_size == 72


def test_version_2_digits_checkpoints_record_the_split_they_validated_on(tmp_path):
    """Version 2 recorded the configured val_fraction (0.1 by default), but digits always held out 20%; a
    folder's record was right and stays."""
    write_run(tmp_path)
    as_written_before_v3(tmp_path / "best.safetensors")
    meta = json.loads((tmp_path / "best.json").read_text())
    for spec, recorded, read in (("digits", 0.1, 0.2), ("photos/", 0.1, 0.1), ("fashion-mnist", 0.1, 0.1)):
        v2 = {
            **meta,
            "format": "vitkit-checkpoint/2",
            "data": {"spec": spec, "val_fraction": recorded, "split_seed": 0},
        }
        (tmp_path / "best.json").write_text(json.dumps(v2))
        assert read_meta(tmp_path)["data"]["val_fraction"] == read, spec


def test_resume_state_round_trips_with_weights_only(tmp_path):
    state = {"epoch": 2, "history": [{"epoch": 1, "val_top1": 0.5}], "model": {"w": torch.arange(3.0)}}
    write_run(tmp_path, state=state, name="last")
    loaded = load_state(tmp_path)  # torch.load(weights_only=True): plain values and tensors only
    assert loaded["epoch"] == 2 and loaded["history"] == state["history"]
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0))
    with pytest.raises(FileNotFoundError, match="Nothing to resume in"):
        load_state(tmp_path / "empty")
    torch.save({"epoch": 2, "opaque": Opaque()}, tmp_path / "last.state.pt")  # pickled code: refused
    with pytest.raises(Exception, match="Weights only load failed"):
        load_state(tmp_path)


class Opaque:
    pass


def modules_loaded_by(statement: str, prefixes: tuple[str, ...] = ("vitkit",)) -> set[str]:
    """The modules whose names start with ``prefixes`` after ``statement``, in a fresh interpreter."""
    code = f"import sys; {statement}; print(' '.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_inference_loads_no_training_code():
    """A server classifies with vitkit.inference: it must not pull in the trainer, its config or yaml."""
    loaded = modules_loaded_by("import vitkit.inference")
    assert "vitkit.inference.predict" in loaded
    assert not {m for m in loaded if m.startswith("vitkit.training")}, loaded
    assert not modules_loaded_by("import vitkit.inference", ("yaml",))  # the recipes' parser


def test_import_vitkit_is_light():
    assert modules_loaded_by("import vitkit") == {"vitkit"}
    assert "vitkit.training.trainer" in modules_loaded_by("import vitkit; vitkit.train")

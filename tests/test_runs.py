"""Run folders: one run per folder, the default name never lands on a run, resume from the run's own config."""

from __future__ import annotations

import json

import torch

import pytest
import yaml

from vitkit.cli.main import main
from vitkit.errors import EXIT_USER_ERROR, OptionError
from vitkit.training import train
from vitkit.training.runs import resume_config
from tests.conftest import as_written_before_v3

QUICK = ["--model", "vit_cifar", "--data", "digits", "--image-size", "32", "--batch-size", "64"]


def cli(*args) -> int:
    return main(["train", *QUICK, *args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run."""
    out = tmp_path_factory.mktemp("runs") / "done"
    assert cli("--epochs", "1", "--output", str(out)) == 0
    return out


def test_training_into_a_run_is_refused_with_the_ways_forward(finished, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in finished.iterdir()}
    assert cli("--epochs", "1", "--output", str(finished)) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "already holds a run (vit_cifar, 1 of 1 epochs done)" in err
    assert f"--resume {finished}" in err and "--output" in err and "--overwrite" in err and err.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in finished.iterdir()} == before  # nothing touched


def test_the_default_name_takes_the_next_free_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "runs" / "vit_cifar-digits"
    first.mkdir(parents=True)
    (first / "config.yaml").write_text("epochs: 3\n")
    result = train(model="vit_cifar", data="digits", image_size=32, epochs=1, batch_size=64)
    assert result.output == "runs/vit_cifar-digits-2" or str(result.output).endswith("vit_cifar-digits-2")
    assert (first / "config.yaml").read_text() == "epochs: 3\n"
    assert "this one goes to runs/vit_cifar-digits-2" in capsys.readouterr().out


def test_overwrite_clears_the_old_runs_files(finished, tmp_path):
    out = tmp_path / "again"
    (out).mkdir()
    for name in ("config.yaml", "best.json", "old.onnx", "old.onnx.json", "confusion.png"):
        (out / name).write_text("stale")
    (out / "notes.txt").write_text("mine")
    assert cli("--epochs", "1", "--output", str(out), "--overwrite") == 0
    assert not (out / "old.onnx").exists() and not (out / "confusion.png").exists()
    assert (out / "notes.txt").read_text() == "mine"  # only the files a run writes are removed
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 1


def test_resume_alone_continues_with_the_runs_own_configuration(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    saved = (run / "config.yaml").read_text()
    # changing what the run is: refused in one sentence, nothing rewritten
    assert main(["train", "--resume", str(run), "--lr", "0.5"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("vitkit train: error: --lr would change the run being resumed") and err.count("\n") == 1
    with pytest.raises(OptionError, match="^weight_decay would change"):
        resume_config(run, {"weight_decay": 0.3})
    assert main(["train", "--resume", str(run), "--epochs", "0"]) == EXIT_USER_ERROR  # out of range
    assert (run / "config.yaml").read_text() == saved
    # the original command plus --resume changes nothing; --epochs extends
    assert resume_config(run, {"model": "vit_cifar", "image_size": "32"}).epochs == 1
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "after epoch 1 of 2" in out
    history = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["epochs"] == 2 and config["data"] == "digits" and config["image_size"] == 32
    assert config["val_fraction"] == 0.2  # the share digits held out, recorded rather than left to a default


def test_a_run_from_before_val_fraction_resumes_on_the_split_it_trained_on(finished, tmp_path):
    """Runs written before digits honoured --val-fraction say 0.1 in config.yaml and held out 20%; resume
    follows the checkpoint's record (upgraded), not config.yaml."""
    import shutil

    run = tmp_path / "old"
    shutil.copytree(finished, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "val_fraction": 0.1}))
    meta = json.loads((run / "last.json").read_text())
    old = {**meta, "format": "vitkit-checkpoint/2", "data": {**meta["data"], "val_fraction": 0.1}}
    (run / "last.json").write_text(json.dumps(old))
    as_written_before_v3(run / "last.safetensors")
    assert resume_config(run, {}).val_fraction == 0.2


def test_eval_scores_a_held_out_folder_whole_and_matches_classes_by_name(tmp_path):
    """A test folder that is not the run's data is scored image by image (not a split of it); it may hold a
    subset of the classes, never a class the model does not know."""
    import numpy as np

    from tests.serving import CLASSES, encoded, write_checkpoint
    from vitkit.inference import evaluate

    run = write_checkpoint(tmp_path / "run")
    test = tmp_path / "test"
    for k, name in enumerate(["sky", "flower"]):  # a subset, listed in another order than the model's
        (test / name).mkdir(parents=True)
        for j in range(7):
            (test / name / f"{j}.png").write_bytes(encoded(np.full((40, 40, 3), 30 * k + 20 * j, np.uint8)))
    result = evaluate(run, data=str(test))
    assert result.count == 14  # every image, not the 10% validation split
    assert "every image" in result.data and "2 of the model's 5 classes" in result.data
    assert "absent: bricks, temple, water" in result.data
    assert result.per_class["bricks"] is None and result.per_class["sky"] is not None
    confusion = np.array(result.confusion)
    assert confusion[CLASSES.index("sky")].sum() == 7 and confusion[CLASSES.index("flower")].sum() == 7
    assert evaluate(run, data=str(test), split="val").count < 14

    (test / "zebra").mkdir()
    (test / "zebra" / "0.png").write_bytes(encoded(np.zeros((40, 40, 3), np.uint8)))
    with pytest.raises(ValueError) as e:
        evaluate(run, data=str(test))
    assert str(e.value).count("zebra") == 1 and "not trained on" in str(e.value)


class _PixelLinear(torch.nn.Module):
    """A linear model of the raw pixels: unlike a randomly initialised network, it tells an image from its mirror."""

    num_classes = 3
    prefers_channels_last = False

    def __init__(self, side: int):
        super().__init__()
        from vitkit.preprocess import Preprocess

        self.preprocess = Preprocess(input_size=side)
        self.fc = torch.nn.Linear(3 * side * side, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))  # [B, 3, S, S] -> [B, 3 S S] -> [B, classes]


def test_hflip_tta_scores_the_mean_probability_of_each_image_and_its_mirror():
    import torch.nn.functional as F

    from vitkit.data import ImageSet
    from vitkit.inference import evaluate_model
    from vitkit.preprocess import normalize

    torch.manual_seed(0)
    model = _PixelLinear(8).eval()
    images = torch.randint(0, 256, (11, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(11) % 3
    cpu = torch.device("cpu")
    tta = evaluate_model(model, ImageSet(images, labels), cpu, batch_size=4, tta="hflip")

    with torch.no_grad():
        x = normalize(images, model.preprocess)
        p = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    assert tta.loss == pytest.approx(F.nll_loss(p.log(), labels).item(), rel=1e-5)
    expected = torch.zeros(3, 3, dtype=torch.long)
    for y, guess in zip(labels, p.argmax(1)):
        expected[y, guess] += 1
    assert torch.equal(tta.confusion.cpu(), expected)
    plain = evaluate_model(model, ImageSet(images, labels), cpu, batch_size=4)
    assert plain.loss != pytest.approx(tta.loss, rel=1e-2)  # the mirror really was scored
    with pytest.raises(ValueError, match="choose none, hflip"):
        evaluate_model(model, ImageSet(images, labels), cpu, batch_size=4, tta="vflip")


def test_hflip_tta_on_a_model_trained_without_flips_is_warned_about(finished, capsys):
    assert json.loads((finished / "best.json").read_text())["hflip"] is False  # digits: "auto" keeps flips off
    assert main(["eval", str(finished), "--tta", "hflip"]) == 0
    err = capsys.readouterr().err
    assert "trained without horizontal flips" in err and "--tta none" in err and err.count("\n") == 1
    assert main(["eval", str(finished)]) == 0
    assert "horizontal flips" not in capsys.readouterr().err

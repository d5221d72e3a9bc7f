"""Released weights by hub name, against a local server laid out like the Hugging Face Hub (never the network):
download, cache hit, offline mode, a transfer cut short, the preset and class names from the weights' config,
Apple's BGR weights turned to RGB, and a preset mismatch in one sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save

import vitkit
from tests.conftest import randomize_
from tests.hubserver import HubServer
from vitkit.cli.main import main

transformers = pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

APPLE = "apple/mobilevit-test-xx-small"
TIMM = "timm/mobilevitv2_050.test_in1k"


@pytest.fixture(scope="module")
def apple_model():
    """A transformers MobileViT-XXS with three labelled classes, as Apple's hub repositories hold one."""
    config = transformers.MobileViTConfig(
        hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0,
        id2label={0: "tabby cat", 1: "golden retriever", 2: "daisy"}, label2id={"tabby cat": 0, "golden retriever": 1, "daisy": 2},
    )  # fmt: skip
    return randomize_(transformers.MobileViTForImageClassification(config)).eval()


@pytest.fixture
def hub(apple_model, tmp_path, monkeypatch):
    timm_like = randomize_(vitkit.create_model("mobilevitv2_050", num_classes=4)).eval()
    repos = {
        APPLE: {
            "config.json": json.dumps(apple_model.config.to_dict()).encode(),
            "preprocessor_config.json": json.dumps({"do_flip_channel_order": True, "crop_size": 256}).encode(),
            "model.safetensors": save({k: v.contiguous() for k, v in apple_model.state_dict().items()}),
        },
        TIMM: {
            "config.json": json.dumps(
                {"architecture": "mobilevitv2_050", "num_classes": 4, "label_names": ["a", "b", "c", "d"]}
            ).encode(),  # fmt: skip
            "model.safetensors": save(timm_like.state_dict()),
        },
    }
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest sets it: no network
    with HubServer(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        server.timm_like = timm_like
        yield server


def test_a_hub_name_downloads_once_and_gives_the_released_models_classes(hub, apple_model):
    model = vitkit.create_model("mobilevit_xxs", pretrained=APPLE).eval()
    assert model.num_classes == 3 and model.class_names == ["tabby cat", "golden retriever", "daisy"]
    assert model.load_result.source == "transformers"
    rgb = torch.rand(2, 3, 256, 256)
    with torch.no_grad():  # Apple's weights take BGR; vitkit's model now takes RGB
        theirs = apple_model(pixel_values=rgb.flip(1)).logits
        torch.testing.assert_close(model(rgb), theirs, atol=1e-4, rtol=0)
    assert hub.downloads("model.safetensors") == 1
    vitkit.create_model("mobilevit_xxs", pretrained=APPLE)
    assert hub.downloads("model.safetensors") == 1  # the second time, from huggingface_hub's cache


def test_offline_mode_reads_the_cache_and_says_what_is_missing(hub, monkeypatch):
    vitkit.create_model("mobilevit_xxs", pretrained=APPLE)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    assert vitkit.create_model("mobilevit_xxs", pretrained=APPLE).num_classes == 3
    assert len(hub.requests) == before  # not one request
    with pytest.raises(FileNotFoundError, match="is not in the cache and the hub cannot be reached"):
        vitkit.create_model("mobilevitv2_050", pretrained=TIMM)


def test_a_transfer_cut_short_keeps_nothing(hub, tmp_path):
    hub.truncate.add(f"{APPLE}/model.safetensors")
    with pytest.raises(ValueError, match=f"Could not download {APPLE}/model.safetensors .*nothing was kept"):
        vitkit.create_model("mobilevit_xxs", pretrained=APPLE)
    snapshots = list((tmp_path / "hf-cache").rglob("snapshots/*/model.safetensors"))
    assert snapshots == []  # no file a later run could mistake for the weights
    hub.truncate.clear()
    assert vitkit.create_model("mobilevit_xxs", pretrained=APPLE).num_classes == 3  # and a retry works


def test_the_preset_comes_from_the_weights_config(hub, tmp_path, capsys):
    model = vitkit.create_model("mobilevitv2_050", pretrained=TIMM)
    assert model.class_names == ["a", "b", "c", "d"]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), hub.timm_like(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match=f"{TIMM} holds mobilevitv2_050 weights, not mobilevit_xxs; use --model"):
        vitkit.create_model("mobilevit_xxs", pretrained=TIMM)
    with pytest.raises(FileNotFoundError, match="No repository apple/no-such-model"):
        vitkit.create_model("mobilevit_xxs", pretrained="apple/no-such-model")

    # vitkit train --pretrained NAME: the model is inferred, the head replaced for the data's classes
    out = tmp_path / "run"
    argv = [
        "train",
        "--pretrained",
        APPLE,
        "--data",
        "digits",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "training mobilevit_xxs" in said and "classifier not loaded" in said and "BGR weights" in said
    assert main([*argv[:-1], str(tmp_path / "other"), "--model", "mobilevit_s"]) == 2
    assert "holds mobilevit_xxs weights, not mobilevit_s" in capsys.readouterr().err


def test_local_files_and_names_that_are_neither(tmp_path):
    from vitkit.weights.hub import is_hub_name, resolve

    assert is_hub_name("apple/mobilevit-xx-small") and is_hub_name("hf-hub:timm/vit_base_patch16_224.augreg_in21k")
    assert is_hub_name("google/vit-base-patch16-224@a1b2c3")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(save({"x": torch.zeros(1)}))
    assert resolve(str(weights)).weights == weights and not is_hub_name(str(weights))
    with pytest.raises(FileNotFoundError, match="give a file, a URL, or a Hugging Face Hub name"):
        resolve(str(tmp_path / "missing.pt"))


def test_predict_takes_a_hub_name_and_prints_the_released_classes(hub, apple_model, tmp_path, capsys):
    """`vitkit predict apple/mobilevit-xx-small photo.jpg`: the released model's class names, and the class
    the released model itself gives those pixels (BGR, as Apple trained it)."""
    from tests.serving import sample_photos
    from vitkit.inference.predict import Classifier
    from vitkit.preprocess import normalize

    photo = sample_photos(tmp_path / "photos")[0]
    assert main(["predict", APPLE, str(photo), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    top = line.split(": ", 1)[1].split(" ")[0:2]  # "tabby cat 51.2%, ..." -> the first name's words
    classifier = Classifier(APPLE, "cpu")
    pixels = classifier.pixels(photo)[None]
    with torch.no_grad():
        theirs = apple_model(pixel_values=normalize(pixels, classifier.preprocess).flip(1)).logits
    expected = apple_model.config.id2label[int(theirs.argmax())]
    assert " ".join(top).startswith(expected), line
    assert classifier.class_names == ["tabby cat", "golden retriever", "daisy"]
    from vitkit.serve.backends import torch_model, verified_exports  # what `vitkit serve NAME` holds

    assert verified_exports(APPLE) == []  # the automatic backend choice finds no exported files, so torch
    served = torch_model(APPLE, "cpu")
    assert served.source == APPLE and served.class_names == classifier.class_names
    np.testing.assert_allclose(served.run(pixels), classifier.probabilities(pixels).numpy(), atol=1e-6)


def test_a_missing_relative_path_is_not_mistaken_for_a_repository(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "runs/missing", "photo.jpg"]) != 0
    assert "No checkpoint or run folder at runs/missing, and no repository runs/missing" in capsys.readouterr().err

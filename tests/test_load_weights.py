"""Reading weights files safely and reporting what does not fit, in one sentence."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit.training.optimizers import KerasAdam
from vitkit.weights.load import read_state_dict


def test_round_trip_through_safetensors(tmp_path):
    source = vitkit.create_model("mobilevit_xxs_keras", num_classes=5).eval()
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    model = vitkit.create_model("mobilevit_xxs_keras", num_classes=5).eval()
    assert vitkit.load_weights(model, tmp_path / "w.safetensors").source == "vitkit"
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), atol=0, rtol=0)


def test_wrappers_and_data_parallel_prefix_are_removed(tmp_path):
    source = vitkit.create_model("vit_cifar", num_classes=10)
    wrapped = {"epoch": 3, "model": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    model = vitkit.create_model("vit_cifar", num_classes=10)
    vitkit.load_weights(model, tmp_path / "ckpt.pth")
    loaded, expected = model.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


class Opaque:  # any object that is not a tensor needs code to unpickle
    pass


def test_pickled_code_is_refused(tmp_path):
    torch.save({"weights": Opaque()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="never unpickles code"):
        read_state_dict(tmp_path / "evil.pt")


def test_missing_file_and_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No weights file"):
        read_state_dict(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="without model.safetensors"):
        read_state_dict(tmp_path)


def test_corrupt_files_give_one_sentence(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_state_dict(tmp_path / "bad.safetensors")
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"bad\.pt is not a PyTorch weights file"):
        read_state_dict(tmp_path / "bad.pt")


def test_weights_of_another_architecture_are_named():
    vit = vitkit.create_model("vit_cifar", num_classes=10)
    with pytest.raises(ValueError, match="another architecture"):
        vitkit.load_weights(vitkit.create_model("mobilevit_xxs"), vit.state_dict())


def test_shape_mismatch_outside_the_head_is_an_error():
    xs = vitkit.create_model("mobilevit_xs")
    with pytest.raises(ValueError, match="do not fit mobilevit_xxs"):
        vitkit.load_weights(vitkit.create_model("mobilevit_xxs"), xs.state_dict())


def test_missing_and_unexpected_keys_are_listed():
    state = vitkit.create_model("vit_cifar", num_classes=10).state_dict()
    del state["blocks.3.norm1.weight"]
    state["blocks.3.extra.weight"] = torch.zeros(1)
    model = vitkit.create_model("vit_cifar", num_classes=10)
    with pytest.raises(ValueError, match=r"missing blocks\.3\.norm1\.weight; unexpected blocks\.3\.extra\.weight"):
        vitkit.load_weights(model, state)
    result = vitkit.load_weights(model, state, strict=False)
    assert result.missing == ["blocks.3.norm1.weight"] and result.unexpected == ["blocks.3.extra.weight"]


def test_a_classifier_of_another_size_is_skipped_for_fine_tuning():
    imagenet = vitkit.create_model("mobilevit_xxs", num_classes=1000)
    model = vitkit.create_model("mobilevit_xxs", num_classes=5)
    head_before = model.head.weight.clone()
    result = vitkit.load_weights(model, imagenet.state_dict())
    assert "1000 classes" in result.head_skipped
    torch.testing.assert_close(model.head.weight, head_before)
    torch.testing.assert_close(model.stem.conv.weight, imagenet.stem.conv.weight)


def test_backbone_only_weights_load():
    state = {k: v for k, v in vitkit.create_model("vit_ti16").state_dict().items() if not k.startswith("head.")}
    result = vitkit.load_weights(vitkit.create_model("vit_ti16", num_classes=3), state)
    assert "left as initialised" in result.head_skipped


def test_bgr_to_rgb_reverses_the_first_conv():
    source = vitkit.create_model("mobilevit_xxs")
    model = vitkit.create_model("mobilevit_xxs")
    vitkit.load_weights(model, source.state_dict(), bgr_to_rgb=True)
    torch.testing.assert_close(model.stem.conv.weight, source.stem.conv.weight.flip(1))


def test_rules_can_drop_keys_a_model_has_no_use_for():
    """transformers' ViTModel carries a pooler that no classifier uses: the ViT family's rules drop it."""
    source = vitkit.create_model("vit_cifar", num_classes=10).state_dict()
    state = {k.replace("head.", "classifier.") if k.startswith("head.") else f"vit.{k}": v for k, v in source.items()}
    state["vit.pooler.dense.weight"] = torch.zeros(64, 64)  # as transformers names them
    model = vitkit.create_model("vit_cifar", num_classes=10)
    result = vitkit.load_weights(model, state)
    assert result.source == "transformers" and not result.unexpected and not result.missing
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())


def test_the_deploy_wrapper_adds_no_weights():
    from vitkit.export.deploy import DeployModel

    model = vitkit.create_model("vit_cifar", num_classes=10)
    assert set(DeployModel(model).state_dict()) == {f"model.{k}" for k in model.state_dict()}


KERAS = Path(__file__).parent / "data" / "keras_mobilevit_xxs"


@pytest.mark.parametrize("name", ["checkpoint.weights.h5", "mobilevit_xxs.keras"])
def test_the_keras_examples_own_files_give_keras_probabilities(name):
    """Files written by real Keras 3 from the keras.io example's code (tests/data/keras_mobilevit_xxs/README.md):
    loaded into mobilevit_xxs_keras, the six photos get Keras' own probabilities."""
    import numpy as np

    expected = np.load(KERAS / "expected.npz")
    model = vitkit.create_model("mobilevit_xxs_keras", num_classes=5).eval()
    assert vitkit.load_weights(model, KERAS / name).source == "keras"
    x = torch.from_numpy(expected["images_nhwc_uint8"]).permute(0, 3, 1, 2).float() / 255  # the model's Rescaling
    with torch.no_grad():
        probabilities = model(x).softmax(-1).numpy()
    assert expected["probabilities"].max(1).min() > 0.3  # not a flat output, where any loader would pass
    np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-4, rtol=0)


def test_keras_files_are_refused_where_they_cannot_go(tmp_path):
    with pytest.raises(ValueError, match="is a Keras weights file, which loads only into a model built as Keras"):
        vitkit.load_weights(vitkit.create_model("mobilevit_xxs"), KERAS / "checkpoint.weights.h5")
    with pytest.raises(ValueError, match=r"is a Keras weights file: load it into its model"):
        read_state_dict(KERAS / "checkpoint.weights.h5")
    # 1000 ImageNet-style classes: the 5-class head is skipped and said, as for any other source
    model = vitkit.create_model("mobilevit_xxs_keras")
    assert "classifier not loaded" in str(vitkit.load_weights(model, KERAS / "mobilevit_xxs.keras"))
    (tmp_path / "broken.weights.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="is not a readable Keras weights file"):
        vitkit.load_weights(vitkit.create_model("mobilevit_xxs_keras", num_classes=5), tmp_path / "broken.weights.h5")


def test_one_training_step_reproduces_keras_with_dropout_off():
    """Keras' own step, recorded by tests/keras_fixtures.py: the example's model without dropout (random on both
    sides), its weights as Keras wrote them, one Adam step on six photos. vitkit's training-mode loss before and
    after the step, and its probabilities after it, are Keras'."""
    import numpy as np

    step = np.load(KERAS / "train_step.npz")
    images = np.load(KERAS / "expected.npz")["images_nhwc_uint8"]
    model = vitkit.create_model("mobilevit_xxs_keras", num_classes=5, drop_rate=0.0, attn_drop_rate=0.0)
    vitkit.load_weights(model, KERAS / "checkpoint.weights.h5")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(step["labels"])
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)  # Keras: the same on the softmax output
    opt = KerasAdam(model.parameters(), lr=0.002)  # torch.optim.Adam(eps=1e-7) ends 2e-3 away in loss_after
    model.train()
    loss = loss_fn(model(x), y)
    assert loss.item() == pytest.approx(float(step["loss_before"]), abs=1e-5)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn(model(x), y).item()
        probabilities = model.eval()(x).softmax(-1).numpy()
    assert abs(after - float(step["loss_before"])) > 0.1  # the step moved the model, so matching it means something
    assert after == pytest.approx(float(step["loss_after"]), abs=1e-4)
    np.testing.assert_allclose(probabilities, step["probabilities_after"], atol=1e-4, rtol=0)


def test_vitkit_import_makes_a_run_of_the_keras_examples_checkpoint(tmp_path, capsys):
    """`vitkit import checkpoint.weights.h5 --model mobilevit_xxs_keras --classes ...`: a run folder whose
    `vitkit predict` gives Keras' probabilities to the six photos, each under its class name."""
    import json

    import numpy as np
    from PIL import Image

    from vitkit.cli.main import main

    expected = np.load(KERAS / "expected.npz")
    classes = ["dandelion", "daisy", "tulips", "sunflowers", "roses"]  # tf_flowers' label order in TFDS
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, pixels in enumerate(expected["images_nhwc_uint8"]):
        Image.fromarray(pixels).save(photos / f"{i}.png")
    run = tmp_path / "run"
    argv = ["import", str(KERAS / "checkpoint.weights.h5"), "--model", "mobilevit_xxs_keras", "--output", str(run)]
    assert main([*argv, "--classes", ",".join(classes)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(photos), "--top-k", "5", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    for line in lines:
        i = int(Path(line["path"]).stem)
        ours = {t["class"]: t["probability"] for t in line["top"]}
        np.testing.assert_allclose([ours[c] for c in classes], expected["probabilities"][i], atol=1e-4, rtol=0)
    assert len(lines) == 6
    assert main([*argv, "--classes", ",".join(classes)]) == 2  # the run exists: refused, nothing rewritten
    assert "already holds a run" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "other"), "--classes", "a,b,c"]) == 2
    assert "does not fit 3 classes" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "other")]) == 2
    assert "Name the classes" in capsys.readouterr().err

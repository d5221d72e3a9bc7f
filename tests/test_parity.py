"""Number-for-number parity with independent implementations holding the same weights.

transformers' models are built from a config (random init, no download), perturbed so that a wrong
mapping cannot hide, loaded into vitkit through ``vitkit.load_weights``, and compared in fp32 eval mode on
a batch of 3. (transformers' image processor flips RGB to BGR; the models take the tensor they are given.)
timm is compared too where it is installed (it needs torchvision, so it lives in the benchmark environment).
"""

import os
import re

import pytest
import torch

import vitkit
from tests.conftest import randomize_

transformers = pytest.importorskip("transformers")

MOBILEVIT_HF_CONFIGS = {
    "mobilevit_xxs": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0),
    "mobilevit_xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "mobilevit_s": dict(hidden_sizes=[144, 192, 240], neck_hidden_sizes=[16, 32, 64, 96, 128, 160, 640]),
}


def hf_mobilevit(name: str):
    config = transformers.MobileViTConfig(num_labels=1000, **MOBILEVIT_HF_CONFIGS[name])
    return randomize_(transformers.MobileViTForImageClassification(config)).eval()


def assert_same_logits(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert theirs.std() > 0.05, "reference logits too flat for the comparison to mean anything"
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(MOBILEVIT_HF_CONFIGS))
def test_mobilevit_matches_transformers(name):
    reference = hf_mobilevit(name)
    model = vitkit.create_model(name).eval()
    result = vitkit.load_weights(model, reference.state_dict())
    assert result.source == "transformers" and not result.missing and not result.unexpected
    for size in ((256, 256), (200, 232)):  # 200x232: feature maps of odd size take the resize path
        x = torch.rand(3, 3, *size)
        with torch.no_grad():
            assert_same_logits(model(x), reference(pixel_values=x).logits)


@pytest.mark.slow
def test_vit_b16_matches_transformers():
    config = transformers.ViTConfig(layer_norm_eps=1e-6, num_labels=1000)  # Google's ViT uses eps 1e-6
    reference = randomize_(transformers.ViTForImageClassification(config)).eval()
    model = vitkit.create_model("vit_b16").eval()
    vitkit.load_weights(model, reference.state_dict())
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert_same_logits(model(x), reference(pixel_values=x).logits)


def small_hf_vit():
    config = transformers.ViTConfig(
        hidden_size=192, num_hidden_layers=3, num_attention_heads=3, intermediate_size=768,
        layer_norm_eps=1e-6, num_labels=10,
    )  # fmt: skip
    return randomize_(transformers.ViTForImageClassification(config)).eval()


def test_vit_interpolated_position_embedding_matches_transformers():
    reference = small_hf_vit()
    model = vitkit.create_model("vit_ti16", depth=3, num_classes=10).eval()
    vitkit.load_weights(model, reference.state_dict())
    x = torch.randn(3, 3, 288, 320)
    with torch.no_grad():
        assert_same_logits(model(x), reference(pixel_values=x, interpolate_pos_encoding=True).logits)


def to_hub_names(state_dict):
    """transformers v5 ViT names -> the v4 names that the hub's google/vit-* files carry."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"\.layers\.(\d+)\.", r".encoder.layer.\1.", key)
        key = re.sub(
            r"attention\.(q|k|v)_proj",
            lambda m: "attention.attention." + dict(q="query", k="key", v="value")[m[1]],
            key,
        )
        key = key.replace("attention.o_proj", "attention.output.dense")
        key = key.replace("mlp.fc1", "intermediate.dense").replace("mlp.fc2", "output.dense")
        out[key] = value
    return out


def test_vit_loads_hub_files_in_safetensors_and_bin(tmp_path):
    from safetensors.torch import save_file

    reference = small_hf_vit()
    hub_state = to_hub_names(reference.state_dict())
    assert "vit.encoder.layer.0.attention.attention.query.weight" in hub_state
    save_file({k: v.contiguous() for k, v in hub_state.items()}, tmp_path / "model.safetensors")
    torch.save(hub_state, tmp_path / "pytorch_model.bin")
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        expected = reference(pixel_values=x).logits
    for path in (tmp_path / "model.safetensors", tmp_path / "pytorch_model.bin", tmp_path):
        model = vitkit.create_model("vit_ti16", depth=3, num_classes=10).eval()
        assert vitkit.load_weights(model, path).source == "transformers"
        with torch.no_grad():
            assert_same_logits(model(x), expected)


def to_cvnets_names(hf_state):
    """transformers MobileViT names -> Apple ml-cvnets checkpoint names (the inverse of transformers'
    ``convert_mlcvnets_to_pytorch.py``): layer_N, ``block`` wrappers, fused qkv_proj, global_rep."""
    depth = {}
    for key in hf_state:
        m = re.match(r"mobilevit\.encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.", key)
        if m:
            depth[m[1]] = max(depth.get(m[1], 0), int(m[2]) + 1)
    out = {}
    for key, value in hf_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        k = (
            key.replace("mobilevit.", "")
            .replace(".convolution.", ".block.conv.")
            .replace(".normalization.", ".block.norm.")
        )
        k = k.replace("conv_stem.", "conv_1.").replace("classifier.", "classifier.fc.")
        k = k.replace("expand_1x1", "block.exp_1x1").replace("reduce_1x1", "block.red_1x1")
        k = re.sub(r"(layer\.\d+\.(layer\.\d+|downsampling_layer))\.conv_3x3", r"\1.block.conv_3x3", k)
        k = re.sub(r"^encoder\.layer\.(\d+)\.layer\.(\d+)\.", lambda m: f"layer_{int(m[1]) + 1}.{m[2]}.", k)
        k = re.sub(r"^encoder\.layer\.(\d+)\.downsampling_layer\.", lambda m: f"layer_{int(m[1]) + 1}.0.", k)
        stage = re.match(r"^encoder\.layer\.(\d+)\.", k)
        if stage:
            i = stage[1]
            k = re.sub(r"^encoder\.layer\.(\d+)\.", lambda m: f"layer_{int(m[1]) + 1}.1.", k)
            k = k.replace(".conv_kxk.", ".local_rep.conv_3x3.").replace(".conv_1x1.", ".local_rep.conv_1x1.")
            k = k.replace(".conv_projection.", ".conv_proj.")
            k = re.sub(r"\.layernorm\.", f".global_rep.{depth[i]}.", k)
            k = re.sub(r"\.transformer\.layer\.(\d+)\.", r".global_rep.\1.", k)
            k = k.replace("layernorm_before", "pre_norm_mha.0").replace(
                "attention.output.dense", "pre_norm_mha.1.out_proj"
            )
            k = k.replace("layernorm_after", "pre_norm_ffn.0").replace("intermediate.dense", "pre_norm_ffn.1")
            k = k.replace("output.dense", "pre_norm_ffn.4")
            qkv = re.match(r"(.*)\.attention\.attention\.(query|key|value)\.(weight|bias)$", k)
            if qkv:
                if qkv[2] != "query":
                    continue
                parts = [hf_state[key.replace(".query.", f".{n}.")] for n in ("query", "key", "value")]
                out[f"{qkv[1]}.pre_norm_mha.1.qkv_proj.{qkv[3]}"] = torch.cat(parts)
                continue
        out[k] = value
    return out


def test_mobilevit_loads_ml_cvnets_checkpoints(tmp_path):
    reference = hf_mobilevit("mobilevit_xxs")
    cvnets_state = to_cvnets_names(reference.state_dict())
    assert "layer_3.1.global_rep.2.weight" in cvnets_state  # the final LayerNorm after 2 transformer layers
    assert "layer_1.0.block.exp_1x1.block.conv.weight" in cvnets_state
    torch.save({"state_dict": cvnets_state}, tmp_path / "mobilevit_xxs.pt")  # as a training script saves it
    model = vitkit.create_model("mobilevit_xxs").eval()
    result = vitkit.load_weights(model, tmp_path / "mobilevit_xxs.pt")
    assert result.source == "ml-cvnets"
    x = torch.rand(3, 3, 256, 256)
    with torch.no_grad():
        assert_same_logits(model(x), reference(pixel_values=x).logits)


def test_bgr_to_rgb_lets_the_model_take_rgb():
    reference = hf_mobilevit("mobilevit_xxs")
    model = vitkit.create_model("mobilevit_xxs").eval()
    vitkit.load_weights(model, reference.state_dict(), bgr_to_rgb=True)
    rgb = torch.rand(3, 3, 256, 256)
    with torch.no_grad():
        assert_same_logits(model(rgb), reference(pixel_values=rgb.flip(1)).logits)  # the processor's BGR flip


TIMM_NAMES = {
    "mobilevit_xxs": "mobilevit_xxs",
    "mobilevit_xs": "mobilevit_xs",
    "mobilevit_s": "mobilevit_s",
    "vit_b16": "vit_base_patch16_224",
    "vit_s16": "vit_small_patch16_224",
    "vit_ti16": "vit_tiny_patch16_224",
    **{f"mobilevitv2_{w}": f"mobilevitv2_{w}" for w in ("050", "075", "100", "125", "150", "175", "200")},
}


@pytest.mark.parametrize("name", list(TIMM_NAMES))
def test_matches_timm(name):
    # timm needs torchvision, so these run in the benchmark environment; tests/test_timm_parity.py checks the
    # same in every run from timm's recorded logits. VITKIT_TIMM=1 makes a missing timm a failure, not a skip.
    if os.environ.get("VITKIT_TIMM") == "1":
        import timm
    else:
        timm = pytest.importorskip("timm", reason="timm needs torchvision: run in the benchmark environment")
    kwargs = {"dynamic_img_size": True} if name.startswith("vit") else {}
    reference = randomize_(timm.create_model(TIMM_NAMES[name], pretrained=False, **kwargs)).eval()
    model = vitkit.create_model(name).eval()
    assert vitkit.load_weights(model, reference.state_dict()).source in ("timm", "vitkit/timm")
    sizes = [(224, 224)] if name.startswith("vit") else [(256, 256), (200, 232)]
    for size in sizes:
        x = torch.rand(3, 3, *size)
        with torch.no_grad():
            assert_same_logits(model(x), reference(x))


def test_mobilevit_training_gradients_match_transformers():
    # train mode (BatchNorm on batch statistics), dropout off in both: the in-place activations and the
    # channels_last-aware unfold/fold must give transformers' gradients
    config = transformers.MobileViTConfig(
        num_labels=10, hidden_dropout_prob=0.0, classifier_dropout_prob=0.0, **MOBILEVIT_HF_CONFIGS["mobilevit_xxs"]
    )
    reference = randomize_(transformers.MobileViTForImageClassification(config)).train()
    model = vitkit.create_model("mobilevit_xxs", num_classes=10, drop_rate=0.0, head_drop_rate=0.0).train()
    vitkit.load_weights(model, reference.state_dict())
    x = torch.rand(2, 3, 96, 96)
    y = torch.tensor([1, 7])
    torch.nn.functional.cross_entropy(reference(pixel_values=x).logits, y).backward()
    model.to(memory_format=torch.channels_last)
    torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y).backward()
    pairs = [
        (model.stem.conv.weight, reference.mobilevit.conv_stem.convolution.weight),
        (model.stages[2][1].local_kxk.conv.weight, reference.mobilevit.encoder.layer[2].conv_kxk.convolution.weight),
        (model.head.weight, reference.classifier.weight),
    ]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours.grad.contiguous(), theirs.grad, atol=1e-5, rtol=1e-3)

"""MobileViTv2 against transformers (logits, gradients, parameter counts) and ml-cvnets' key layout; MobileViTv3
against the paper's parameter counts and MACs and its authors' key layout. timm parity for v2 is in
tests/test_timm_parity.py (recorded) and tests/test_parity.py (live, in the benchmark environment). Forward and
backward of every preset at two sizes are in tests/test_models.py."""

from __future__ import annotations

import re

import pytest
import torch

import vitkit
from vitkit.models.mobilevitv2 import MobileViTV2Config
from vitkit.models.summary import count_macs
from tests.conftest import randomize_

transformers = pytest.importorskip("transformers")

WIDTHS = {"050": 0.5, "075": 0.75, "100": 1.0, "125": 1.25, "150": 1.5, "175": 1.75, "200": 2.0}


def hf_mobilevitv2(width: float, **config) -> torch.nn.Module:
    config = transformers.MobileViTV2Config(width_multiplier=width, num_labels=1000, **config)
    return randomize_(transformers.MobileViTV2ForImageClassification(config)).eval()


@pytest.mark.parametrize("name", list(WIDTHS))
def test_mobilevitv2_matches_transformers(name):
    reference = hf_mobilevitv2(WIDTHS[name])
    model = vitkit.create_model(f"mobilevitv2_{name}").eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    result = vitkit.load_weights(model, reference.state_dict())
    assert result.source == "transformers" and not result.missing and not result.unexpected
    # 190: not a multiple of 32, yet every feature map a block sees is even, where transformers (which drops
    # a remainder row instead of resizing as ml-cvnets and timm do) computes the same function
    for size in (256, 190):
        x = torch.rand(3, 3, size, size)
        with torch.no_grad():
            theirs = reference(pixel_values=x).logits
            assert theirs.std() > 0.05
            torch.testing.assert_close(model(x), theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_mobilevitv2_training_gradients_match_transformers(channels_last):
    """Train mode (BatchNorm on batch statistics), dropout off: the attention computed on a view of the
    feature map, in either memory layout, gives the gradients of transformers' unfold/fold."""
    reference = hf_mobilevitv2(0.5, classifier_dropout_prob=0.0).train()
    model = vitkit.create_model("mobilevitv2_050", head_drop_rate=0.0).train()
    vitkit.load_weights(model, reference.state_dict())
    x, y = torch.rand(2, 3, 128, 128), torch.tensor([1, 7])  # every feature map even (see above)
    torch.nn.functional.cross_entropy(reference(pixel_values=x).logits, y).backward()
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    block, theirs = model.stages[2][1], reference.mobilevitv2.encoder.layer[2]
    pairs = [
        (model.stem.conv.weight, reference.mobilevitv2.conv_stem.convolution.weight),
        (block.transformer[0].attn.qkv.weight, theirs.transformer.layer[0].attention.qkv_proj.convolution.weight),
        (block.norm.weight, theirs.layernorm.weight),
        (model.head.weight, reference.classifier.weight),
    ]
    for ours, expected in pairs:
        torch.testing.assert_close(ours.grad.contiguous(), expected.grad, atol=1e-5, rtol=1e-3)


def to_cvnets_names(state: dict[str, torch.Tensor], block_rules: list[tuple[str, str]], head: str) -> dict:
    """vitkit MobileViT names -> ml-cvnets': layer_N, ConvLayer ``block`` wrappers, MV2 convs by their cvnets
    names, the block's last norm as global_rep.{depth}; ``block_rules`` (regex, replacement) name the rest of
    the block (local_rep and global_rep) the way the family does, ``head`` the classifier."""
    out = {}
    for key, value in state.items():
        k = re.sub(r"^stages\.(\d)\.", lambda m: f"layer_{int(m[1]) + 1}.", key)
        k = k.replace("stem.", "conv_1.").replace("head.", head).replace("final_conv.", "conv_1x1_exp.")
        k = re.sub(r"\.(expand|depthwise|project)\.", lambda m: f".block.{m[1]}.", k)
        k = k.replace(".expand.", ".exp_1x1.").replace(".depthwise.", ".conv_3x3.").replace(".project.", ".red_1x1.")
        for pattern, replacement in block_rules:
            k = re.sub(pattern, replacement, k)
        depth = re.match(r"layer_(\d)\.", k)
        if k.endswith((".norm.weight", ".norm.bias")) and ".global_rep." not in k:  # the block's last norm
            k = k.replace(".norm.", f".global_rep.{ {3: 2, 4: 4, 5: 3}[int(depth[1])] }.")
        k = k.replace(".proj.", ".conv_proj.")
        k = re.sub(r"\.(conv|bn)\.", lambda m: ".block.conv." if m[1] == "conv" else ".block.norm.", k)
        out[k] = value
    return out


# v2's block (and v3 on v2): numbered local_rep and FFN Sequentials, pre_norm_attn
CVNETS_V2_BLOCK = [
    (r"\.local_kxk\.", ".local_rep.0."),
    (r"\.local_1x1\.", ".local_rep.1.conv."),
    (r"\.transformer\.(\d+)\.norm1\.", r".global_rep.\1.pre_norm_attn.0."),
    (r"\.transformer\.(\d+)\.attn\.qkv\.", r".global_rep.\1.pre_norm_attn.1.qkv_proj.conv."),
    (r"\.transformer\.(\d+)\.attn\.proj\.", r".global_rep.\1.pre_norm_attn.1.out_proj.conv."),
    (r"\.transformer\.(\d+)\.norm2\.", r".global_rep.\1.pre_norm_ffn.0."),
    (r"\.transformer\.(\d+)\.mlp\.0\.", r".global_rep.\1.pre_norm_ffn.1.conv."),
    (r"\.transformer\.(\d+)\.mlp\.3\.", r".global_rep.\1.pre_norm_ffn.3.conv."),
]
# v1's block (and v3 on v1, which adds ``fusion``): named local_rep convs, pre_norm_mha, pre_norm_ffn.1/.4
CVNETS_V1_BLOCK = [
    (r"\.local_kxk\.", ".local_rep.conv_3x3."),
    (r"\.local_1x1\.", ".local_rep.conv_1x1.conv."),
    (r"\.transformer\.(\d+)\.norm1\.", r".global_rep.\1.pre_norm_mha.0."),
    (r"\.transformer\.(\d+)\.attn\.qkv\.", r".global_rep.\1.pre_norm_mha.1.qkv_proj."),
    (r"\.transformer\.(\d+)\.attn\.proj\.", r".global_rep.\1.pre_norm_mha.1.out_proj."),
    (r"\.transformer\.(\d+)\.norm2\.", r".global_rep.\1.pre_norm_ffn.0."),
    (r"\.transformer\.(\d+)\.mlp\.fc1\.", r".global_rep.\1.pre_norm_ffn.1."),
    (r"\.transformer\.(\d+)\.mlp\.fc2\.", r".global_rep.\1.pre_norm_ffn.4."),
]


def to_cvnets_v2_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vitkit MobileViTv2 (or v3-on-v2) names -> ml-cvnets' (and the MobileViTv3 authors'), with
    classifier.1 and everything under ``encoder.`` as newer ml-cvnets checkpoints store it."""
    return {"encoder." + k: v for k, v in to_cvnets_names(state, CVNETS_V2_BLOCK, "classifier.1.").items()}


@pytest.mark.parametrize("name", ["mobilevitv2_050", "mobilevitv3_050"])
def test_ml_cvnets_layout_loads(name, tmp_path):
    """A checkpoint laid out as ml-cvnets (v2) and the MobileViTv3 authors (v3 on v2) save it, built from a
    model's own weights: it loads by name and gives that model's logits."""
    source = randomize_(vitkit.create_model(name)).eval()
    state = to_cvnets_v2_names(source.state_dict())
    assert "encoder.layer_3.1.global_rep.2.weight" in state  # the GroupNorm after layer3's two layers
    assert "encoder.layer_3.1.global_rep.0.pre_norm_ffn.3.block.conv.weight" in state
    assert "encoder.layer_3.1.local_rep.0.block.norm.running_var" in state
    assert "encoder.classifier.1.weight" in state
    torch.save(state, tmp_path / "checkpoint_ema_best.pt")
    model = vitkit.create_model(name).eval()
    assert vitkit.load_weights(model, tmp_path / "checkpoint_ema_best.pt").source == "ml-cvnets"
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), atol=0, rtol=0)


def to_cvnets_v1_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vitkit MobileViTv3-XXS/XS/S names -> the MobileViTv3 authors' (ml-cvnets v1 layout plus ``fusion``)."""
    return to_cvnets_names(state, CVNETS_V1_BLOCK, "classifier.fc.")


def test_mobilevitv3_authors_layout_loads(tmp_path):
    source = randomize_(vitkit.create_model("mobilevitv3_xxs")).eval()
    state = to_cvnets_v1_names(source.state_dict())
    assert state["layer_3.1.fusion.block.conv.weight"].shape == (64, 64 + 64, 1, 1)  # [C, d + C] 1x1
    assert state["layer_3.1.local_rep.conv_3x3.block.conv.weight"].shape == (64, 1, 3, 3)  # depthwise
    assert "layer_4.1.global_rep.4.weight" in state and "conv_1x1_exp.block.norm.running_mean" in state
    torch.save(state, tmp_path / "checkpoint_ema_best.pt")
    model = vitkit.create_model("mobilevitv3_xxs").eval()
    assert vitkit.load_weights(model, tmp_path / "checkpoint_ema_best.pt").source == "ml-cvnets"
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), atol=0, rtol=0)


# (parameters, MMACs at 256x256) from the paper (Wadekar and Chaurasia 2022, Table 1 and the authors' README)
PAPER = {
    "mobilevitv3_xxs": (1.2, 289),
    "mobilevitv3_xs": (2.5, 927),
    "mobilevitv3_s": (5.8, 1841),
    "mobilevitv3_050": (1.4, 481),
    "mobilevitv3_075": (3.0, 1064),
    "mobilevitv3_100": (5.1, 1876),
}


def attention_macs_as_cvnets_counts(model: torch.nn.Module, size: int) -> int:
    """ml-cvnets' profiler, which produced the paper's figures, counts the two attention products of a
    sequence of N tokens of width d as N*d*d each (per patch position); they cost N*N*d, as
    torch.utils.flop_counter counts them. The difference, over every v1-style transformer layer."""
    from vitkit.models.layers import Attention

    difference, p = 0, 2
    for stage, side in zip(model.stages[2:], (size // 8, size // 16, size // 32)):
        n = (side // p) ** 2
        for layer in stage[1].modules():
            if isinstance(layer, Attention):
                d = layer.num_heads * layer.head_dim
                difference += 2 * p * p * (n * n * d - n * d * d)
    return difference


@pytest.mark.parametrize("name", list(PAPER))
def test_mobilevitv3_against_the_papers_figures(name):
    params, paper_mmacs = PAPER[name]
    model = vitkit.create_model(name).eval()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == params
    macs, _ = count_macs(model, torch.rand(1, 3, 256, 256))
    as_the_paper_counts = (macs - attention_macs_as_cvnets_counts(model, 256)) / 1e6
    assert abs(as_the_paper_counts - paper_mmacs) / paper_mmacs < 0.01, as_the_paper_counts


def test_v2_widths_follow_ml_cvnets_rounding():
    # layer1 rounds to 16 and the stem is clipped to 16..64 (ml-cvnets' config/mobilevit_v2.py)
    cfg = MobileViTV2Config(width=0.75)
    assert (cfg.stem_chs, cfg.channels, cfg.dims) == (24, (48, 96, 192, 288, 384), (96, 144, 192))
    assert MobileViTV2Config(width=2.0).stem_chs == 64

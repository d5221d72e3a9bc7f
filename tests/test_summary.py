"""``vitkit summary``: shapes, parameters and MACs, checked against the keras.io example's Keras summary and by hand."""

import re
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.cli.main import main
from vitkit.models.layers import Attention
from vitkit.models.summary import count_macs, summarize

SEED_SUMMARY = Path(__file__).parent / "data" / "keras_mobilevit_xxs_summary.txt"
KERAS_KINDS = {
    "Conv2D": "conv",
    "DepthwiseConv": "conv",
    "BatchNorm": "bn",
    "MultiHead": "mha",
    "LayerNorm": "ln",
    "Dense": "dense",
}


def keras_layers():
    """(kind, params, (positions, channels)) of every layer with parameters in the keras.io example's summary."""
    rows = []
    for line in SEED_SUMMARY.read_text().splitlines():
        m = re.match(r"^\S+ \((\w+)\)?\s+\(None, ([\d, ]+)\)\s+(\d+)", line)
        if not m or int(m[3]) == 0:
            continue
        kind = next(v for k, v in KERAS_KINDS.items() if k.startswith(m[1]) or m[1].startswith(k))
        dims = [int(d) for d in m[2].split(",")]
        rows.append((kind, int(m[3]), (int(torch.tensor(dims[:-1]).prod()) if len(dims) > 1 else 1, dims[-1])))
    return rows


def vitkit_layers(model, size=256):
    """The same triple for vitkit's layers, in the order the forward pass runs them."""
    rows, hooks = [], []

    def record(kind, params):
        def hook(module, inputs, out):
            per_sample = out.shape[1:]
            if out.dim() == 4:  # [B, C, H, W] -> (H*W, C), as Keras' NHWC
                rows.append((kind, params, (per_sample[1] * per_sample[2], per_sample[0])))
            else:  # [B, N, D] or [B, D]
                rows.append(
                    (kind, params, (int(torch.tensor(per_sample[:-1]).prod()) if out.dim() > 2 else 1, per_sample[-1]))
                )

        return hook

    inside_attention = {id(m) for a in model.modules() if isinstance(a, Attention) for m in a.modules() if m is not a}
    for module in model.modules():
        n = sum(p.numel() for p in module.parameters())
        if isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_hook(record("conv", n)))
        elif isinstance(module, torch.nn.BatchNorm2d):  # Keras counts the moving mean and variance too
            hooks.append(module.register_forward_hook(record("bn", 4 * module.num_features)))
        elif isinstance(module, Attention):
            hooks.append(module.register_forward_hook(record("mha", n)))
        elif isinstance(module, torch.nn.LayerNorm):
            hooks.append(module.register_forward_hook(record("ln", n)))
        elif isinstance(module, torch.nn.Linear) and id(module) not in inside_attention:
            hooks.append(module.register_forward_hook(record("dense", n)))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return rows


def test_keras_preset_has_the_layers_of_the_seed_summary():
    expected = keras_layers()
    assert len(expected) == 28 + 7 + 21 + 9 + 18 + 19  # convs, depthwise, BN, MHA, LN, Dense
    actual = vitkit_layers(vitkit.create_model("mobilevit_xxs_keras", num_classes=5))
    assert actual == expected
    total = re.search(r"Total params: ([\d,]+)", SEED_SUMMARY.read_text())[1]
    assert summarize(vitkit.create_model("mobilevit_xxs_keras", num_classes=5)).keras_total_params == int(
        total.replace(",", "")
    )


def test_vit_b16_macs_match_the_formula():
    # patch conv + 12 x (qkv, q@k, attn@v, proj, 2 MLP linears) + head, at 224: 17.6 GMACs (SPEC)
    n, d, tokens = 196, 768, 197
    block = tokens * d * 3 * d + 2 * tokens * tokens * d + tokens * d * d + 2 * tokens * d * 4 * d
    expected = n * d * 3 * 16 * 16 + 12 * block + d * 1000
    model = vitkit.create_model("vit_b16").eval()
    x = torch.zeros(1, 3, 224, 224)
    every_token, _ = count_macs(lambda x: model.forward_head(model.forward_features(x)), x)
    assert every_token == expected
    assert round(every_token / 1e9, 1) == 17.6
    # forward() takes only the class token through the last block: its q, attention row, projection and MLP
    skipped = (tokens - 1) * (2 * d * d + 2 * tokens * d + 2 * d * 4 * d)
    macs, _ = count_macs(model, x)
    assert macs == expected - skipped
    assert round(macs / 1e9, 2) == 16.35


def mobilevit_macs_by_hand(name: str, size: int = 256, num_classes: int = 1000) -> int:
    """The MACs of ml-cvnets' MobileViT from its architecture table alone: convolutions, linear layers and the
    two attention matmuls (each of the 4 patch positions attends over its own H*W/4 tokens)."""
    from vitkit.models.layers import make_divisible
    from vitkit.models.mobilevit import CONFIGS

    cfg = CONFIGS[name.removeprefix("mobilevit_")]
    macs, side, chs = 9 * 3 * cfg.stem_chs * (size // 2) ** 2, size // 2, cfg.stem_chs

    def mv2(c_in, c_out, stride):
        nonlocal side
        hidden = make_divisible(c_in * cfg.expansion, 8)
        out = c_in * hidden * side**2  # expand 1x1 at the input size
        side //= stride
        return out + 9 * hidden * side**2 + hidden * c_out * side**2  # depthwise 3x3, project 1x1

    c1, c2, c3, c4, c5 = cfg.channels
    macs += mv2(chs, c1, 1) + mv2(c1, c2, 2) + 2 * mv2(c2, c2, 1)
    chs = c2
    for c_out, d, depth in zip((c3, c4, c5), cfg.dims, cfg.depths):
        macs += mv2(chs, c_out, 2)
        hw = side**2
        macs += 9 * c_out * c_out * hw + c_out * d * hw  # local 3x3 conv, 1x1 to d
        attention = 2 * hw * (hw // 4) * d  # q @ k^T and attn @ v, 4 groups of hw/4 tokens
        macs += depth * (hw * d * 3 * d + attention + hw * d * d + 2 * hw * d * int(d * cfg.mlp_ratio))
        macs += d * c_out * hw + 9 * 2 * c_out * c_out * hw  # 1x1 back to C, fusion 3x3 of 2C
        chs = c_out
    return macs + chs * cfg.num_features * side**2 + cfg.num_features * num_classes


@pytest.mark.parametrize("name, gmacs", [("mobilevit_xxs", 0.4), ("mobilevit_xs", 1.0), ("mobilevit_s", 2.0)])
def test_mobilevit_macs_match_the_architecture(name, gmacs):
    s = summarize(vitkit.create_model(name))
    assert s.macs == mobilevit_macs_by_hand(name)
    assert round(s.macs / 1e9, 1) == gmacs  # the paper's figures
    assert sum(r.macs for r in s.rows) == s.macs  # the stages add up to the whole


def test_summary_command(capsys):
    assert main(["summary", "mobilevit_xxs", "--image-size", "200", "--num-classes", "5"]) == 0
    out = capsys.readouterr().out
    assert "stages.2 (InvertedResidual, MobileViTBlock)" in out
    assert "[1, 48, 25, 25]" in out  # 200 -> 100 -> 50 -> 25
    assert (
        f"Trainable params: {sum(p.numel() for p in vitkit.create_model('mobilevit_xxs', num_classes=5).parameters()):,}"
        in out
    )


def test_summary_command_errors_in_one_line(capsys):
    assert main(["summary", "mobilevit_xxl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Unknown model" in err


def test_models_command_lists_every_preset(capsys):
    assert main(["models", "vit*"]) == 0
    out = capsys.readouterr().out
    assert "86,567,656" in out and "16.35G" in out  # forward(): the last block for the class token alone
    assert all(name in out for name in vitkit.list_models("vit*"))

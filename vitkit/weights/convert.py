"""Rename state dicts of the reference implementations to vitkit's module names.

Each source is a list of (regex, replacement) rules applied in order to every key; q/k/v projections
stored separately (transformers) are concatenated into vitkit's fused ``qkv``.
"""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]
Rules = list[tuple[str, str]]

# one transformer layer in transformers' (v4) naming: shared by its ViT and MobileViT
_HF_LAYER: Rules = [
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.attention\.(query|key|value)\.", r".attn.\1."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]

# transformers MobileViTForImageClassification (checkpoints apple/mobilevit-*)
HF_MOBILEVIT: Rules = [
    (r"^mobilevit\.", ""),
    (r"\.convolution\.", ".conv."),
    (r"\.normalization\.", ".bn."),
    (r"^conv_stem\.", "stem."),
    (r"^encoder\.layer\.(\d+)\.layer\.(\d+)\.", r"stages.\1.\2."),  # layer1, layer2: MV2 blocks only
    (r"^encoder\.layer\.(\d+)\.downsampling_layer\.", r"stages.\1.0."),
    (r"^encoder\.layer\.(\d+)\.", r"stages.\1.1."),  # the MobileViT block of layer3 .. layer5
    (r"\.expand_1x1\.", ".expand."),
    (r"\.conv_3x3\.", ".depthwise."),
    (r"\.reduce_1x1\.", ".project."),
    (r"\.conv_kxk\.", ".local_kxk."),
    (r"\.conv_1x1\.conv\.", ".local_1x1."),
    (r"\.transformer\.layer\.(\d+)\.", r".transformer.\1."),
    *_HF_LAYER,
    (r"\.layernorm\.", ".norm."),
    (r"\.conv_projection\.", ".proj."),
    (r"^conv_1x1_exp\.", "final_conv."),
    (r"^classifier\.", "head."),
]

# timm mobilevit_xxs / _xs / _s (ByobNet layout)
TIMM_MOBILEVIT: Rules = [
    (r"\.conv1_1x1\.", ".expand."),
    (r"\.conv2_kxk\.", ".depthwise."),
    (r"\.conv3_1x1\.", ".project."),
    (r"\.conv_kxk\.", ".local_kxk."),
    (r"\.conv_1x1\.", ".local_1x1."),
    (r"\.conv_proj\.", ".proj."),
    (r"\.conv_fusion\.", ".fusion."),
    (r"^head\.fc\.", "head."),
]

# Apple ml-cvnets MobileViT v1 checkpoints (layer_1 .. layer_5, ConvLayer ``block`` wrappers)
CVNETS_MOBILEVIT: Rules = [
    (r"\.block\.", "."),
    (r"\.norm\.", ".bn."),
    (r"^conv_1\.", "stem."),
    (r"^layer_1\.", "stages.0."),
    (r"^layer_2\.", "stages.1."),
    (r"^layer_3\.", "stages.2."),
    (r"^layer_4\.", "stages.3."),
    (r"^layer_5\.", "stages.4."),
    (r"\.local_rep\.conv_3x3\.", ".local_kxk."),
    (r"\.local_rep\.conv_1x1\.conv\.", ".local_1x1."),
    (r"\.exp_1x1\.", ".expand."),
    (r"\.conv_3x3\.", ".depthwise."),
    (r"\.red_1x1\.", ".project."),
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.0\.", r".transformer.\1.norm1."),
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.1\.qkv_proj\.", r".transformer.\1.attn.qkv."),
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.1\.out_proj\.", r".transformer.\1.attn.proj."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.0\.", r".transformer.\1.norm2."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.1\.", r".transformer.\1.mlp.fc1."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.4\.", r".transformer.\1.mlp.fc2."),
    (r"\.global_rep\.\d+\.(weight|bias)$", r".norm.\1"),  # the LayerNorm after the last transformer layer
    (r"\.conv_proj\.", ".proj."),
    (r"^conv_1x1_exp\.", "final_conv."),
    (r"^classifier\.fc\.", "head."),
]

# transformers ViTForImageClassification / ViTModel: the hub files (google/vit-*) use the v4 names,
# a transformers v5 model's own state_dict the v5 ones (layers.N, q_proj, o_proj, mlp.fc1)
HF_VIT: Rules = [
    (r"^vit\.", ""),
    (r"^layers\.(\d+)\.", r"blocks.\1."),
    (r"\.attention\.q_proj\.", ".attn.query."),
    (r"\.attention\.k_proj\.", ".attn.key."),
    (r"\.attention\.v_proj\.", ".attn.value."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.", r"blocks.\1."),
    *_HF_LAYER,
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]

# keys some sources carry that no vitkit model uses
IGNORED_KEYS = re.compile(r"(^|\.)num_batches_tracked$|^(vit\.)?pooler\.")


def rename_keys(state_dict: StateDict, rules: Rules) -> StateDict:
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        out[key] = value
    return merge_qkv(out)


def merge_qkv(state_dict: StateDict) -> StateDict:
    """``X.attn.query/key/value.{weight,bias}`` -> ``X.attn.qkv.{weight,bias}`` (q, k, v stacked on dim 0)."""
    out = {}
    for key, value in state_dict.items():
        match = re.match(r"(.*\.attn)\.(query|key|value)\.(weight|bias)$", key)
        if match is None:
            out[key] = value
        elif match.group(2) == "query":
            prefix, kind = match.group(1), match.group(3)
            parts = [state_dict.get(f"{prefix}.{name}.{kind}") for name in ("query", "key", "value")]
            if any(p is None for p in parts):
                out[key] = value  # incomplete triple: left for the missing/unexpected report
            else:
                out[f"{prefix}.qkv.{kind}"] = torch.cat(parts, dim=0)
        elif f"{match.group(1)}.query.{match.group(3)}" not in state_dict:
            out[key] = value
    return out

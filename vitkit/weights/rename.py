"""Rename a state dict from another library's names to vitkit's, by rules each model family declares.

A family's rules are (regex, replacement) pairs applied in order to every key (a replacement of ``None``
drops a key the family has no use for); q/k/v projections stored separately (transformers) are then
concatenated into vitkit's fused ``qkv``.
"""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]
Rules = list[tuple[str, str | None]]

# keys that no vitkit model keeps, whatever wrote them
IGNORED_KEYS = re.compile(r"(^|\.)num_batches_tracked$")


def rename_keys(state_dict: StateDict, rules: Rules) -> StateDict:
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            if repl is None:
                if pattern.search(key):
                    break
            else:
                key = pattern.sub(repl, key)
        else:
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

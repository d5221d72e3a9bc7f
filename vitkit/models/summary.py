"""A Keras-style ``model.summary()``: each stage's output shape, parameters and MACs, then the totals."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_ATEN = torch.ops.aten


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode knows the GPU attention kernels but not the CPU one: q @ k^T and attn @ v
    b, h, s_q, d_qk = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return 2 * b * h * s_q * s_k * (d_qk + d_v)


_EXTRA_FLOP_FORMULAS = {_ATEN._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}


@dataclass
class SummaryRow:
    name: str
    kind: str
    output_shape: tuple[int, ...] | None
    params: int
    macs: int


@dataclass
class ModelSummary:
    model_name: str
    input_shape: tuple[int, ...]
    rows: list[SummaryRow]
    trainable_params: int
    frozen_params: int  # parameters with requires_grad=False
    bn_statistics: int  # BatchNorm running mean/var: Keras counts them as non-trainable params
    macs: int  # multiply-accumulates of one forward pass at input_shape (conv, linear, attention matmuls)

    @property
    def keras_total_params(self) -> int:
        return self.trainable_params + self.frozen_params + self.bn_statistics

    def __str__(self) -> str:
        name_w = max([len(f"{r.name} ({r.kind})") for r in self.rows] + [20])
        header = f"{'Layer (type)':<{name_w}}  {'Output shape':<22} {'Param #':>12} {'MACs':>10}"
        rule = "=" * len(header)
        lines = [f'Model: "{self.model_name}"  input {list(self.input_shape)}', rule, header, rule]
        for r in self.rows:
            shape = str(list(r.output_shape)) if r.output_shape else "-"
            lines.append(
                f"{r.name + ' (' + r.kind + ')':<{name_w}}  {shape:<22} {r.params:>12,} {format_macs(r.macs):>10}"
            )
        lines += [
            rule,
            f"Total params: {self.keras_total_params:,} (as Keras counts: BatchNorm statistics included)",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.frozen_params + self.bn_statistics:,}",
            f"MACs per image: {format_macs(self.macs // self.input_shape[0])} (at {self.input_shape[-2]}x{self.input_shape[-1]})",
            "_" * len(header),
        ]
        return "\n".join(lines)


def format_macs(macs: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= scale:
            return f"{macs / scale:.2f}{unit}"
    return str(macs)


def count_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Total MACs of ``model(x)`` and MACs per module path (``""`` is the whole model)."""
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=_EXTRA_FLOP_FORMULAS)
    with counter, torch.no_grad():
        model(x)
    root = type(model).__name__
    per_module = {}
    for path, ops in counter.get_flop_counts().items():
        if path == root or path.startswith(root + "."):
            per_module[path[len(root) + 1 :]] = sum(ops.values()) // 2
    return counter.get_total_flops() // 2, per_module


def _rows_to_report(model: nn.Module, layers: bool) -> list[tuple[str, nn.Module]]:
    """Top-level children with the stages/blocks containers opened one level; with ``layers`` every
    module that holds parameters of its own (convs, norms, linears), in definition order."""
    if layers:
        return [(n, m) for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    rows = []
    for name, child in model.named_children():
        if name in ("stages", "blocks") and isinstance(child, nn.Sequential):
            rows += [(f"{name}.{i}", block) for i, block in child.named_children()]
        elif any(True for _ in child.parameters()) or name == "head":
            rows.append((name, child))
    return rows


def _kind(module: nn.Module) -> str:
    if not isinstance(module, nn.Sequential):
        return type(module).__name__
    groups: list[list] = []  # runs of the same block type: [name, count]
    for child in module:
        name = type(child).__name__
        if groups and groups[-1][0] == name:
            groups[-1][1] += 1
        else:
            groups.append([name, 1])
    return ", ".join(name if n == 1 else f"{n}x {name}" for name, n in groups)


@torch.no_grad()
def summarize(
    model: nn.Module, image_size: int | None = None, batch_size: int = 1, layers: bool = False
) -> ModelSummary:
    """Run one forward pass at ``image_size`` (default: the model's) and tabulate it per stage, or with
    ``layers`` per layer (the granularity of Keras' summary)."""
    size = image_size or model.preprocess.input_size
    x = torch.zeros(batch_size, 3, size, size)
    was_training = model.training
    model.eval()
    shapes: dict[str, tuple[int, ...]] = {}
    reported = _rows_to_report(model, layers)
    hooks = [
        module.register_forward_hook(lambda m, i, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
        for name, module in reported
    ]
    try:
        total_macs, per_module = count_macs(model, x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    rows = []
    own = [(n, p) for n, p in model.named_parameters(recurse=False)]
    if own:  # e.g. ViT's class token and position embedding
        rows.append(SummaryRow(", ".join(n for n, _ in own), "Parameter", None, sum(p.numel() for _, p in own), 0))
    for name, module in reported:
        params = sum(p.numel() for p in module.parameters())
        rows.append(SummaryRow(name, _kind(module), shapes.get(name), params, per_module.get(name, 0)))
    return ModelSummary(
        model_name=getattr(model, "name", type(model).__name__),
        input_shape=tuple(x.shape),
        rows=rows,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        frozen_params=sum(p.numel() for p in model.parameters() if not p.requires_grad),
        bn_statistics=sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))),
        macs=total_macs,
    )

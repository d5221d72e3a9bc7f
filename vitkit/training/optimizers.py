"""The optimizers a recipe names, built with timm's parameter groups (no weight decay on norms and biases)."""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw", "adam-keras", "sgd")


class KerasAdam(torch.optim.AdamW):
    """Adam as Keras 3 computes it, for recipes that reproduce a Keras example.

    Keras adds epsilon to sqrt(v) before the bias correction (its step is lr * sqrt(1 - b2^t) / (1 - b1^t) *
    m / (sqrt(v) + eps)); PyTorch adds it after (lr * m_hat / (sqrt(v_hat) + eps)). The two agree when PyTorch's
    epsilon at step t is eps / sqrt(1 - b2^t), which this sets before each step: 31.6x Keras' 1e-7 at the first
    step. On the keras.io MobileViT, one step with PyTorch's placement moved the loss 2e-3 away from Keras'.
    Keras applies weight decay decoupled, in every optimizer, as AdamW does.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-7, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        for group in self.param_groups:
            group["keras_eps"] = eps

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            states = [self.state[p] for p in group["params"] if p.grad is not None]
            t = (int(states[0]["step"]) if states and "step" in states[0] else 0) + 1  # the step about to be taken
            group["eps"] = group["keras_eps"] / math.sqrt(1 - group["betas"][1] ** t)
        return super().step(closure)


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    # no weight decay on norms, biases, class token and position embedding (as timm and the paper do)
    decay, no_decay = [], []
    for param_name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or param_name in ("pos_embed", "cls_token") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adam-keras":
        return KerasAdam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    raise ValueError(f"Unknown optimizer '{name}'; choose one of {', '.join(OPTIMIZERS)}.")

"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a training batch, with label smoothing.

As timm's ``Mixup`` in its default "batch" mode: one mixing coefficient per batch, drawn from Beta(alpha,
alpha); image i is mixed with image B-1-i (the batch order is already random); with both methods on, each
batch uses one of them with probability 1/2. CutMix's box is centred uniformly, clipped to the image, and the
coefficient is then corrected to the area actually pasted. The targets are the same mix of the two images'
label-smoothed one-hot vectors, for ``F.cross_entropy`` with probability targets.
"""

from __future__ import annotations

import numpy as np
import torch


class MixUpCutMix:
    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, smoothing: float = 0.0):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("MixUpCutMix needs mixup_alpha or cutmix_alpha above 0.")
        self.num_classes, self.smoothing = num_classes, smoothing
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, H, W] normalized images, y [B] labels -> mixed images, targets [B, num_classes]."""
        # Beta draws need numpy; its generator is seeded from ours, so the run's seed decides them too
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < 0.5)
        lam = float(rng.beta(*(2 * [self.cutmix_alpha if use_cutmix else self.mixup_alpha])))
        partner = x.flip(0)
        if use_cutmix:
            H, W = x.shape[-2:]
            cut = np.sqrt(1 - lam)
            h, w = int(H * cut), int(W * cut)
            cy, cx = int(rng.integers(H)), int(rng.integers(W))
            top, bottom = max(cy - h // 2, 0), min(cy + h // 2, H)
            left, right = max(cx - w // 2, 0), min(cx + w // 2, W)
            x = x.clone()
            x[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
            lam = 1 - (bottom - top) * (right - left) / (H * W)
        else:
            x = x * lam + partner * (1 - lam)
        own = smooth_one_hot(y, self.num_classes, self.smoothing)
        return x, own * lam + own.flip(0) * (1 - lam)


def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """[B] labels -> [B, num_classes]: 1 - smoothing + smoothing / n on the label, smoothing / n elsewhere (as
    ``F.cross_entropy(label_smoothing=...)``)."""
    off = smoothing / num_classes
    target = torch.full((len(y), num_classes), off, device=y.device)
    return target.scatter_(1, y[:, None], 1 - smoothing + off)

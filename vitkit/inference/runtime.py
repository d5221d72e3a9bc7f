"""Where and how a trained model runs for inference: the device, and the model made ready for it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vitkit.checkpoint import load_model
from vitkit.models import fuse


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (a GPU when PyTorch sees one), ``cpu``, ``cuda`` (this process's local rank) or ``cuda:N``."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but PyTorch sees no GPU; use --device cpu.")
        index = local_rank if requested == "cuda" else int(requested.split(":")[1])
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if requested != "cpu":
        raise ValueError(f"Unknown device '{requested}'; use auto, cpu, cuda or cuda:N.")
    return torch.device(requested)


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy with BatchNorm folded into its convolutions, in the memory order it runs fastest in
    (same logits, less work: 1.88x timm's inference throughput for MobileViT-XXS on CPU). Training's
    validation pass and ``vitkit eval`` both run this, so they compute the same numbers."""
    fused = fuse(model)  # the copy keeps name, preprocess and class_names
    return fused.to(memory_format=memory_format(fused))


def memory_format(model: nn.Module) -> torch.memory_format:
    """The memory order ``model`` runs fastest in, for its weights and its inputs."""
    return torch.channels_last if model.prefers_channels_last else torch.contiguous_format


def load_for_inference(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The checkpoint's model, ready for inference on ``device``, and its description. ``checkpoint`` may also
    name released weights on the Hugging Face Hub (``apple/mobilevit-xx-small``), when no such path exists and
    its first part is no local folder."""
    if names_released_weights(checkpoint):
        try:
            model, meta = load_released(str(checkpoint))
        except FileNotFoundError as e:  # neither a path here nor a model there: say both
            reason = str(e)[:1].lower() + str(e)[1:]
            raise FileNotFoundError(f"No checkpoint or run folder at {checkpoint}, and {reason}") from None
        except ImportError:  # no huggingface_hub: the name was most likely meant as a path
            raise FileNotFoundError(
                f"No checkpoint or run folder at {checkpoint} (for released weights by hub name: "
                "pip install 'vitkit[hub]')."
            ) from None
    else:
        model, meta = load_model(checkpoint)
    return prepare_for_inference(model).to(device), meta


def names_released_weights(checkpoint: str | Path) -> bool:
    """True for a hub name such as apple/mobilevit-xx-small that is no local path; "runs/typo" beside an
    existing runs/ folder is a mistyped path, not a repository to ask the network for."""
    from vitkit.weights.hub import is_hub_name

    return is_hub_name(str(checkpoint)) and not Path(checkpoint).parent.exists()


def load_released(name: str) -> tuple[nn.Module, dict]:
    """Released weights by hub name as an eval model and a checkpoint-like description: the preset and the
    class names from the weights' own config (ImageNet weights without names get their indices)."""
    from vitkit.models import create_model
    from vitkit.weights.hub import resolve

    weights = resolve(name)
    if weights.preset is None:
        raise ValueError(
            f"{name} does not say which vitkit model its weights fit (no config.json, or one vitkit cannot read); "
            "load them in Python with "
            f'vitkit.create_model(MODEL, pretrained="{name}").'
        )
    model = create_model(weights.preset, pretrained=name).eval()
    names = getattr(model, "class_names", None) or [str(i) for i in range(model.num_classes)]
    model.class_names = names
    meta = {
        "model": weights.preset,
        "class_names": names,
        "preprocess": model.preprocess.to_dict(),
        "_folder": str(weights.weights.parent),
        "weights": weights.weights.name,
        "source": name,
    }
    return model, meta

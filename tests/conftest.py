import os

# tests never touch the network: huggingface_hub reads this when first imported (tests/test_hub.py turns it
# off for its local server)
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def randomize_(model: torch.nn.Module, scale: float = 0.02) -> torch.nn.Module:
    """Give every weight and BatchNorm statistic a non-trivial value so a wrong weight mapping cannot hide."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def as_written_before_v3(weights) -> None:
    """Rewrite a checkpoint's weights file as vitkit wrote them before format 3: no copy of the JSON in the
    header, so the JSON file is the only record (as in runs made by older versions)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from vitkit.checkpoint import HEADER_KEY

    tensors = load_file(weights)
    with safe_open(weights, "pt") as f:
        header = {k: v for k, v in f.metadata().items() if k != HEADER_KEY}
    save_file(tensors, weights, metadata={**header, "format": "vitkit-checkpoint/2"})

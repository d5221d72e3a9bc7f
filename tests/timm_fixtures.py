"""timm parity without timm: weights under timm's own names, and timm's logits, recorded once by timm itself.

timm needs torchvision, which needs another PyTorch build than vitkit's CPU one, so CI cannot run timm. This
module records, in an environment that has timm, for each timm model vitkit maps: the names and shapes of
its state dict, a rule that fills them with seeded random values (BatchNorm statistics included), an input,
and timm's logits. The test rebuilds the same tensors from the same rule, loads them into vitkit under timm's
names and compares logits. The values are not stored, only their SHA-256, so the fixture weighs kilobytes:

    python3 -m venv /tmp/timmenv
    /tmp/timmenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm numpy
    PYTHONPATH=. /tmp/timmenv/bin/python -m tests.timm_fixtures   # writes tests/data/timm_parity.json

Only numpy and torch are imported here, so the same code runs in both environments.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURE = Path(__file__).parent / "data" / "timm_parity.json"
NUM_CLASSES = 10

# vitkit preset -> (timm model name, timm keyword arguments, input shape)
MODELS = {
    "mobilevit_xxs": ("mobilevit_xxs", {}, (2, 3, 256, 256)),
    "mobilevit_xs": ("mobilevit_xs", {}, (2, 3, 200, 232)),  # feature maps of odd size: the resize path
    "mobilevit_s": ("mobilevit_s", {}, (1, 3, 256, 256)),
    "vit_b16": ("vit_base_patch16_224", {}, (1, 3, 224, 224)),
    "vit_s16": ("vit_small_patch16_224", {}, (2, 3, 224, 224)),
    # at 224 only: timm resizes position embeddings with an antialiased kernel (README, Input sizes)
    "vit_ti16": ("vit_tiny_patch16_224", {}, (2, 3, 224, 224)),
    **{  # MobileViTv2: every width, odd feature maps (ml-cvnets' resize before the block) at every other one
        f"mobilevitv2_{w}": (f"mobilevitv2_{w}", {}, (2, 3, 256, 256) if i % 2 == 0 else (1, 3, 200, 232))
        for i, w in enumerate(("050", "075", "100", "125", "150", "175", "200"))
    },
}


def seeded_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A reproducible value for state-dict entry ``name``, scaled by its role so activations stay in range:
    BatchNorm statistics and norm scales around their usual values, weights at 1/sqrt(fan_in)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if name.endswith("running_var"):
        array = rng.uniform(0.5, 2.0, shape)
    elif name.endswith("running_mean"):
        array = rng.uniform(-0.5, 0.5, shape)
    elif len(shape) == 1 and name.endswith("weight"):  # BatchNorm and LayerNorm scales
        array = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1:  # biases
        array = rng.normal(0.0, 0.1, shape)
    elif name.endswith(("pos_embed", "cls_token")):
        array = rng.normal(0.0, 0.5, shape)
    else:
        array = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
    return torch.from_numpy(array.astype(np.float32))


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


def seeded_input(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    rng = np.random.default_rng(zlib.crc32(f"input:{name}".encode()))
    return torch.from_numpy(rng.uniform(0.0, 1.0, shape).astype(np.float32))


def state_dict_from_record(record: dict) -> dict[str, torch.Tensor]:
    """The tensors a fixture record describes, checked against the digests timm's side recorded."""
    state = {}
    for name, shape, expected in record["tensors"]:
        tensor = seeded_tensor(name, tuple(shape))
        if digest(tensor) != expected:
            raise AssertionError(
                f"{name} regenerates differently than when the fixture was made (numpy's generator changed?); "
                "remake it with `python -m tests.timm_fixtures` in the timm environment"
            )
        state[name] = tensor
    return state


def make_fixture() -> dict:
    import timm

    out = {"timm": timm.__version__, "torch": torch.__version__, "num_classes": NUM_CLASSES, "models": {}}
    for preset, (timm_name, kwargs, shape) in MODELS.items():
        model = timm.create_model(timm_name, pretrained=False, num_classes=NUM_CLASSES, **kwargs).eval()
        names = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        state = {k: seeded_tensor(k, s) for k, s in names.items()}
        model.load_state_dict(state)
        x = seeded_input(preset, shape)
        with torch.no_grad():
            logits = model(x)
        out["models"][preset] = {
            "timm_name": timm_name,
            "timm_kwargs": kwargs,
            "input_shape": list(shape),
            "tensors": [[k, list(s), digest(state[k])] for k, s in names.items()],
            "logits": logits.tolist(),
        }
        print(f"{preset:<14} {timm_name:<24} logits std {float(logits.std()):.3f}")
    return out


if __name__ == "__main__":
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(make_fixture(), indent=1) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1e3:.0f} kB)")

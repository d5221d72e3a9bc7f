"""The training configuration: defaults, then a YAML recipe, then command-line overrides."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vitkit.data.autoaugment import MAX_MAGNITUDE, OPS, POLICIES
from vitkit.data.transforms import AUGMENTATIONS
from vitkit.errors import OptionError
from vitkit.preprocess import INTERPOLATIONS, RESIZE_MODES
from vitkit.training.optimizers import OPTIMIZERS

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"


@dataclass
class TrainConfig:
    # what to train on what
    model: str = "mobilevit_xxs"
    data: str = "digits"
    model_args: dict[str, Any] = field(default_factory=dict)  # preset overrides, e.g. {drop_rate: 0.1}
    pretrained: str | None = None  # weights to start from: a file, a URL or a hub name (apple/mobilevit-xx-small)
    freeze_epochs: int = 0  # with pretrained: train only the new head for this many epochs, features frozen
    output: str | None = None  # default: runs/<model>-<data>
    # data pipeline (None: chosen by vitkit.training.defaults, from the model and the data, and printed)
    image_size: int | None = None  # default: fits the data (2x its images' side, 64 at least, the model's at most)
    augment: str = "resize-crop-flip"  # resize-crop-flip | keras-vit | random-resized-crop | none
    train_resize: float | None = None  # resize-crop-flip resizes to image_size * this, then crops; default 1/crop_pct
    hflip: bool | None = None  # horizontal flips; default: on for colour photos, off for grayscale images
    crop_pct: float | None = None  # evaluation keeps this share of the resized side; default: the model's
    interpolation: str | None = None  # bilinear | bicubic | nearest; default: the model's
    resize_mode: str | None = None  # shorter (side, then centre crop) | squash; default: the model's
    mean: list[float] | None = None  # normalisation; default: the model's
    std: list[float] | None = None  # e.g. 0.5,0.5,0.5; default: the model's
    auto_augment: str = "none"  # none | randaugment | trivialaugment: operations drawn per image, after the crop
    auto_augment_ops: int = 2  # randaugment: operations per image
    auto_augment_magnitude: int = 9  # randaugment: their strength, 0-30
    random_erasing: float = 0.0  # share of images with one rectangle erased to noise (timm's --reprob)
    mixup: float = 0.0  # mixup's Beta alpha (timm uses 0.8); 0: off
    cutmix: float = 0.0  # cutmix's Beta alpha (timm uses 1.0); 0: off; with both on, each batch uses one
    class_balanced: bool = False  # draw each epoch with replacement, every class equally often
    node_shards: bool = False  # a streamed pack: machine k of N reads only its shards k, k+N, ... (copy just those)
    multiscale: bool = False  # ml-cvnets' sampler: each batch at one of 5 sides 0.625-1.25x the size, same pixels
    val_fraction: float | None = None  # held out by a seeded split: default 0.2 for digits, 0.1 for a folder
    workers: int = 0  # processes decoding images; 0: one per core, up to 8
    cache: str = "auto"  # auto (memory within memory_budget, else disk if room, else stream) | memory | disk | stream
    memory_budget: float | None = None  # GiB of decoded images to hold in memory; default half this machine's
    max_unreadable: float = 0.05  # streaming: stop when more than this share of an epoch's files is unreadable
    # optimisation
    epochs: int = 5
    batch_size: int = 64
    accumulate: int = 1  # gradient accumulation: one optimizer step every N batches (batch_size * N per step)
    optimizer: str = "adamw"  # adam | adamw | adam-keras (Keras' epsilon placement) | sgd
    lr: float = 2e-3
    lr_base_batch: int | None = None  # lr is for this batch; scaled to the real one (sgd linearly, others by sqrt)
    min_lr: float = 0.0
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.01
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    clip_grad: float | None = None  # max gradient norm
    ema_decay: float | None = None  # e.g. 0.9995: evaluate and save a weight EMA, its BatchNorm statistics recomputed
    # speed
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | none
    channels_last: bool | None = None  # default: on for MobileViT (1.3x faster training on CPU), off for ViT
    compile: bool = False  # torch.compile the model; for GPUs (on CPU it trained slower: benchmarks/RESULTS.md)
    # bookkeeping
    seed: int = 0
    checkpoint_minutes: float = 10.0  # also save inside an epoch this often (one process); a resume continues there

    def __post_init__(self):
        check_config(self)

    def resolved_output(self) -> Path:
        data_name = self.data.split(":")[0] if not Path(self.data).exists() else Path(self.data).name
        return Path(self.output or f"runs/{self.model}-{data_name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "augment": AUGMENTATIONS,
    "auto_augment": POLICIES,
    "optimizer": OPTIMIZERS,
    "schedule": ("cosine", "constant"),
    "amp": ("auto", "bf16", "fp16", "none"),
    "cache": ("auto", "memory", "disk", "stream"),
    "interpolation": INTERPOLATIONS,
    "resize_mode": RESIZE_MODES,
}
# (lowest, highest, lowest included, highest included) for every numeric option; None: no bound
RANGES = {
    "epochs": (1, 100_000, True, True),
    "freeze_epochs": (0, 100_000, True, True),
    "batch_size": (1, 65_536, True, True),
    "accumulate": (1, 4096, True, True),
    "image_size": (16, 4096, True, True),
    "lr": (0, 10, False, True),
    "lr_base_batch": (1, 1 << 24, True, True),
    "auto_augment_ops": (1, len(OPS), True, True),
    "auto_augment_magnitude": (0, MAX_MAGNITUDE, True, True),
    "random_erasing": (0, 1, True, True),
    "mixup": (0, 100, True, True),
    "cutmix": (0, 100, True, True),
    "min_lr": (0, 10, True, True),
    "momentum": (0, 1, True, False),
    "weight_decay": (0, 10, True, True),
    "warmup_epochs": (0, None, True, True),
    "label_smoothing": (0, 1, True, False),
    "clip_grad": (0, None, False, True),
    "ema_decay": (0, 1, False, False),
    "val_fraction": (0, 1, False, False),
    "workers": (0, 256, True, True),
    "memory_budget": (0, None, True, True),
    "max_unreadable": (0, 1, True, True),
    "train_resize": (1, 4, True, True),
    "crop_pct": (0, 1, False, True),
    "seed": (0, 2**63 - 1, True, True),
    "checkpoint_minutes": (0, None, True, True),
}


def _range_text(low, high, low_in, high_in) -> str:
    first = f"{'at least' if low_in else 'above'} {low}"
    if high is None:
        return first
    if low_in and high_in:
        return f"from {low} to {high}"
    return f"{first} and {'at most' if high_in else 'below'} {high}"


def check_config(cfg: TrainConfig) -> None:
    """Every option against its valid range or choices, before any image is decoded or any file written."""
    for name, (low, high, low_in, high_in) in RANGES.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(name, f"takes a number, not {value!r}.")
        ok = (value >= low if low_in else value > low) and (
            high is None or (value <= high if high_in else value < high)
        )
        if not ok or value != value:  # NaN fails every comparison but the last
            raise OptionError(name, f"must be {_range_text(low, high, low_in, high_in)}, not {value}.")
    for name, choices in CHOICES.items():
        value = getattr(cfg, name)
        if value is not None and value not in choices:
            raise OptionError(name, f"takes one of {', '.join(choices)}, not '{value}'.")
    if cfg.min_lr > cfg.lr:
        raise OptionError("min_lr", f"({cfg.min_lr}) must not exceed lr ({cfg.lr}).")
    if cfg.freeze_epochs and not cfg.pretrained:
        raise OptionError("freeze_epochs", "keeps pretrained features fixed: give --pretrained too, or leave it out.")
    if cfg.freeze_epochs > cfg.epochs:  # equal: a linear probe, the features never trained
        raise OptionError("freeze_epochs", f"({cfg.freeze_epochs}) must not exceed epochs ({cfg.epochs}).")
    if cfg.node_shards and cfg.cache in ("memory", "disk"):
        raise OptionError("node_shards", f"streams each machine's own shards: leave out --cache {cfg.cache}.")
    if cfg.node_shards and cfg.class_balanced:
        raise OptionError("node_shards", "draws each machine's own images, which class_balanced cannot balance.")
    if cfg.multiscale and cfg.augment == "none":
        raise OptionError("multiscale", "crops each batch to its own side: choose an --augment other than none.")
    if cfg.warmup_epochs > cfg.epochs:
        raise OptionError("warmup_epochs", f"({cfg.warmup_epochs}) must not exceed epochs ({cfg.epochs}).")
    for name in ("mean", "std"):
        value = getattr(cfg, name)
        if value is not None and (len(value) != 3 or (name == "std" and min(value) <= 0)):
            raise OptionError(
                name, "takes three numbers (one per RGB channel)" + (", each above 0." if name == "std" else ".")
            )


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def coerce(name: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the type of ``TrainConfig.<name>``."""
    hint = _field_types()[name]
    args = typing.get_args(hint)
    optional = isinstance(hint, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "auto", "")):
        if optional:
            return None
        raise OptionError(name, "needs a value.")
    if typing.get_origin(base) is list:  # "0.5,0.5,0.5" on the command line, a list in YAML
        items = value.split(",") if isinstance(value, str) else value
        try:
            return [float(v) for v in items]
        except (TypeError, ValueError):
            raise OptionError(name, f"takes numbers separated by commas, not '{value}'.") from None
    if typing.get_origin(base) is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise OptionError(name, f"takes a mapping such as '{{drop_rate: 0.1}}', not '{value}'.") from None
        if not isinstance(value, dict):
            raise OptionError(name, "takes a mapping such as '{drop_rate: 0.1}'.")
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise OptionError(name, f"takes true or false, not '{value}'.")
    if base is int and isinstance(value, float) and not value.is_integer():
        raise OptionError(name, f"takes a whole number, not {value}.")
    try:
        return base(value)
    except (TypeError, ValueError):
        kind = {"int": "whole number", "float": "number", "str": "text"}.get(base.__name__, base.__name__)
        raise OptionError(name, f"takes a {kind}, not '{value}'.") from None


def recipe_path(recipe: str) -> Path:
    """A recipe name shipped with vitkit (see `vitkit recipes`) or a YAML file."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"Recipe file {path} does not exist.")
        return path
    shipped = RECIPE_DIR / f"{recipe}.yaml"
    if not shipped.is_file():
        names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        close = difflib.get_close_matches(recipe, names, n=1)
        hint = f" Did you mean {close[0]}?" if close else f" Shipped recipes: {', '.join(names)}."
        raise ValueError(f"No recipe '{recipe}'.{hint}")
    return shipped


def load_recipe(recipe: str) -> dict[str, Any]:
    path = recipe_path(recipe)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the recipe.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a YAML mapping of training options.")
    return data


def build_config(recipe: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the recipe, then ``overrides`` (the command line): the one place precedence lives."""
    values = {
        **(load_recipe(recipe) if recipe else {}),
        **{k: v for k, v in (overrides or {}).items() if v is not None},
    }
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean {close[0].replace('_', '-')}?)" if close else ""
        raise ValueError(f"Unknown training option {', '.join(unknown)}{hint}; see `vitkit train --help`.")
    if values.get("pretrained") and "model" not in values:  # the preset the weights' own config names
        from vitkit.weights.hub import is_hub_name, resolve

        if is_hub_name(str(values["pretrained"])):
            values["model"] = resolve(str(values["pretrained"])).preset or TrainConfig.model
    return TrainConfig(**{k: coerce(k, v) for k, v in values.items()})

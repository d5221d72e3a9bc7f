"""Run folders: one folder holds one run. Training into a folder that holds another run is refused (resume it,
or choose another folder, or say --overwrite); the default name never lands on an existing run; a resumed run
continues with its own saved configuration.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import yaml

from vitkit.errors import OptionError
from vitkit.utils import check_writable
from vitkit.training.config import TrainConfig, build_config, coerce

# what training, eval and export write into a run folder (--overwrite removes exactly these)
RUN_FILES = (
    "config.yaml", "best.json", "best.safetensors", "last.json", "last.safetensors", "last.state.pt", "partial.state.pt",
    "metrics.csv", "metrics.json", "*.png", "*.onnx", "*.onnx.json", "*.tflite", "*.tflite.json",
    ".*.tmp",  # what a run killed mid-write left half-written
)  # fmt: skip
# options a resumed run may change: where and how fast it runs, and how long (extending the schedule)
SAFE_ON_RESUME = ("epochs", "workers", "device", "compile", "output", "cache", "memory_budget", "checkpoint_minutes")


def holds_run(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("config.yaml", "last.json", "best.json"))


def describe_run(folder: Path) -> str:
    try:
        meta = json.loads((folder / "last.json").read_text())
        epochs = yaml.safe_load((folder / "config.yaml").read_text()).get("epochs")
        return f"{meta['model']}, {meta.get('epoch', '?')} of {epochs} epochs done"
    except (OSError, ValueError, AttributeError, KeyError):
        return "a run"


def free_default(folder: Path) -> Path:
    """``runs/mobilevit_xxs-digits`` or, when that holds a run, the first free ``...-2``, ``...-3``."""
    candidate, n = folder, 1
    while holds_run(candidate):
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate


def clear_run(folder: Path) -> None:
    for pattern in RUN_FILES:
        for path in folder.glob(pattern):
            path.unlink()


def prepare_output(
    cfg: TrainConfig, resume: bool, overwrite: bool, log: Callable[[str], None], is_main: bool = True
) -> TrainConfig:
    """The config with the folder this run writes to, after the run-folder rules (nothing written yet)."""
    out = cfg.resolved_output()
    if out.exists() and not out.is_dir():
        raise ValueError(f"The output {out} is a file, not a folder; give another --output.")
    check_writable(out / "config.yaml")
    if resume:
        if not (out / "last.state.pt").is_file() and not (out / "partial.state.pt").is_file():
            raise FileNotFoundError(f"Nothing to resume in {out}: no last.state.pt; start without --resume.")
        if is_main:  # what a killed run left half-written (its complete files were renamed, these never were)
            for stale in out.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        try:
            planned = (yaml.safe_load((out / "config.yaml").read_text()) or {}).get("epochs")
        except (OSError, yaml.YAMLError):
            planned = None
        if isinstance(planned, int) and cfg.epochs > planned and cfg.schedule == "cosine":
            log(
                f"extending the run from {planned} to {cfg.epochs} epochs: the cosine schedule is stretched to the "
                "new length and continues from the step reached (the rate steps up to the longer curve's value)"
            )
        return cfg
    if not holds_run(out):
        return cfg
    if overwrite:
        log(f"--overwrite: removing the run in {out} ({describe_run(out)})")
        if is_main:
            clear_run(out)
        return cfg
    if cfg.output is None:  # the default name: take the next free one rather than land on a run
        free = free_default(out)
        log(f"{out} holds a run ({describe_run(out)}); this one goes to {free}")
        return dataclasses.replace(cfg, output=str(free))
    raise ValueError(
        f"{out} already holds a run ({describe_run(out)}); continue it with vitkit train --resume {out}, train into "
        "another folder with --output, or replace it with --overwrite."
    )


def resume_config(folder: str | Path, overrides: dict[str, Any], recipe: str | None = None) -> TrainConfig:
    """The run's own saved configuration, with only the options that may change on resume changed. Options
    given again with the values the run has (the original command plus --resume) change nothing."""
    from vitkit.training.config import load_recipe

    overrides = {**(load_recipe(recipe) if recipe else {}), **overrides}
    folder = Path(folder)
    saved_path = folder / "config.yaml"
    if not saved_path.is_file():
        raise FileNotFoundError(f"{folder} holds no config.yaml; is it a vitkit run folder?")
    try:
        saved = yaml.safe_load(saved_path.read_text()) or {}
    except yaml.YAMLError:
        raise ValueError(f"{saved_path} is not valid YAML; the run's configuration cannot be read.") from None
    saved["output"] = str(folder)
    if (folder / "last.json").is_file():  # the split the run trained on (older runs' config.yaml may differ)
        from vitkit.checkpoint import read_meta

        saved["val_fraction"] = read_meta(folder / "last.json")["data"]["val_fraction"]
    base = build_config(None, saved)
    changed = {}
    for name, value in overrides.items():
        if value is None or name == "output":
            continue
        new = coerce(name, value) if name in base.to_dict() else value
        if new != getattr(base, name, object()):
            changed[name] = new
    refused = sorted(set(changed) - set(SAFE_ON_RESUME))
    if refused:
        name = refused[0]
        raise OptionError(
            name,
            f"would change the run being resumed (it trained with {getattr(base, name)!r}); a resumed run may "
            f"change only {', '.join(SAFE_ON_RESUME)}; start a new run in another folder to change the rest.",
        )
    if "epochs" in changed and changed["epochs"] < base.epochs:
        raise OptionError(
            "epochs", f"cannot shorten a resumed run ({base.epochs} planned); give {base.epochs} or more."
        )
    return dataclasses.replace(base, **changed)

"""The training loop: ``for epoch in ...: train_one_epoch(...); evaluate(...); save_checkpoint(...)``."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from vitkit.checkpoint import load_state, save_checkpoint
from vitkit.data.sources import DataSplits, list_data, load_splits
from vitkit.data.sampling import (
    epoch_order,
    expected_steps,
    multiscale_batches,
    multiscale_plan,
    node_order,
    node_share,
    shard_batches,
)
from vitkit.data.stream import StreamSet, default_workers
from vitkit.data.transforms import BatchTransform
from vitkit.errors import OptionError
from vitkit.inference import evaluate_model, prepare_for_inference
from vitkit.inference.metrics import ClassificationMeter
from vitkit.models import create_model, get_model_spec
from vitkit.preprocess import Preprocess
from vitkit.progress import progress
from vitkit.training import distributed, optimizers
from vitkit.training.config import TrainConfig, build_config
from vitkit.training.defaults import resolve_hflip, resolve_preprocess, train_side
from vitkit.training.memory import keep_freed_memory
from vitkit.training.mixing import MixUpCutMix
from vitkit.training.runs import prepare_output, resume_config
from vitkit.utils import atomic_path, atomic_write_text

PARTIAL = "partial.state.pt"  # the state saved inside an epoch, every --checkpoint-minutes
SPLIT_SEED = 0  # folders without train/ and val/ are split the same way by every run and by `vitkit eval`
TRAILING_GAP, TRAILING_EPOCHS = 0.2, 3  # validation top-1 this far below training's, this many epochs: warn


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    output: Path
    best_top1: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def train(
    config: TrainConfig | None = None,
    *,
    recipe: str | None = None,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    **overrides,
) -> TrainResult:
    """Train a model; the Python twin of ``vitkit train``.

    ``train(recipe="digits_quickstart", epochs=3)`` or ``train(TrainConfig(model=..., data=...))``.
    ``train(resume="runs/x")`` continues a run with its saved configuration (``epochs=`` may extend it);
    ``overwrite=True`` replaces the run a folder holds instead of refusing.
    """
    if isinstance(resume, (str, Path)) and resume:
        if config is not None or recipe is not None:
            raise ValueError("A run resumed by its folder keeps its own configuration; give no config or recipe.")
        cfg, resume = resume_config(resume, overrides), True
    else:
        cfg = config if config is not None else build_config(recipe, overrides)
    log = print if distributed.rank() == 0 else (lambda *args, **kwargs: None)
    cfg = prepare_output(cfg, bool(resume), overwrite, log, distributed.rank() == 0)
    info, device = distributed.setup(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()  # twice the training speed at large batches (see vitkit.training.memory)
    try:
        return _run(cfg, bool(resume), info, device)
    finally:
        distributed.cleanup(info)


def seed_for(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, epoch, stream): a resumed run draws what an
    uninterrupted one would have drawn."""
    return (seed * 1_000_003 + epoch * 10_007 + stream) % (2**63)


@dataclass
class Run:
    """Everything one training run holds; ``setup`` builds it, ``restore`` fills it from a checkpoint."""

    cfg: TrainConfig
    info: distributed.DistInfo
    device: torch.device
    out: Path
    data: DataSplits
    model: nn.Module  # the module whose weights are saved
    train_model: nn.Module  # the same, wrapped for DDP and/or torch.compile
    model_args: dict
    preprocess: Preprocess
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: nn.Module | None
    amp_dtype: torch.dtype | None
    train_tf: BatchTransform
    mix: MixUpCutMix | None
    eval_batch_size: int
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_top1: float = -1.0
    best_epoch: int = 0
    warned: bool = False  # the trailing-validation warning is given once a run
    partial: dict | None = None  # the state saved inside the epoch a resumed run continues
    scales: list[tuple[int, int]] | None = None  # multi-scale training's (side, batch size) pairs

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def _run(cfg: TrainConfig, resume: bool, info: distributed.DistInfo, device: torch.device) -> TrainResult:
    log = print if info.is_main else (lambda *args, **kwargs: None)
    run = setup(cfg, info, device, log)
    if resume:
        restore(run, log)
    for epoch in range(run.start_epoch, cfg.epochs):
        started = time.perf_counter()
        lr_at_start = run.optimizer.param_groups[0]["lr"]  # the rate this epoch trained at (its first step's)
        train_meter = train_one_epoch(run, epoch)
        refresh_ema_batchnorm(run, epoch)
        # the model as `vitkit eval` loads it (BatchNorm folded), on the same pixels in the same batches
        inference_model = prepare_for_inference(run.eval_model)
        val_meter = evaluate_model(inference_model, run.data.val, device, run.eval_batch_size, run.amp_dtype)
        seconds = time.perf_counter() - started
        record = {
            "epoch": epoch + 1,
            "train_loss": round(train_meter.loss, 5),
            "train_top1": round(train_meter.top1, 5),
            "val_loss": round(val_meter.loss, 5),
            "val_top1": round(val_meter.top1, 5),
            "val_top5": round(val_meter.top5, 5),
            "lr": lr_at_start,
            "seconds": round(seconds, 2),
            "train_images_per_s": round(train_meter.count / seconds, 1),
            "steps": train_meter.steps,
        }
        if isinstance(run.data.train, StreamSet):  # files met unreadable this epoch, skipped
            record["unreadable"] = len(train_meter.unreadable)
        run.history.append(record)
        is_best = val_meter.top1 > run.best_top1
        if is_best:
            run.best_top1, run.best_epoch = val_meter.top1, epoch + 1
        if info.is_main:
            save(run, record, is_best)
        distributed.barrier(info)
        log(
            f"epoch {epoch + 1}/{cfg.epochs}  train loss {train_meter.loss:.4f} top1 {train_meter.top1:.2%}  "
            f"val loss {val_meter.loss:.4f} top1 {val_meter.top1:.2%} top5 {val_meter.top5:.2%}  "
            f"{seconds:.1f}s ({record['train_images_per_s']:.0f} img/s){'  *best' if is_best else ''}"
            + (f"  ({record['unreadable']} unreadable files skipped)" if record.get("unreadable") else "")
        )
        warning = trailing_validation(run.history)
        if warning and not run.warned:
            log(warning)
            run.warned = True
    log(f"best val top1 {run.best_top1:.2%} at epoch {run.best_epoch}: {run.out / 'best.safetensors'}")
    return TrainResult(run.out, run.best_top1, run.best_epoch, run.history)


def setup(cfg: TrainConfig, info: distributed.DistInfo, device: torch.device, log) -> Run:
    """Data, model, optimizer, schedule, EMA, mixed precision and transforms for ``cfg``."""
    out = cfg.resolved_output()
    torch.manual_seed(cfg.seed)
    spec = get_model_spec(cfg.model)
    listing = list_data(cfg.data, cfg.val_fraction, SPLIT_SEED)
    if cfg.val_fraction is not None and listing.val_fraction is None:
        raise OptionError(
            "val_fraction", f"does not apply to {listing.name}, which has its own validation split; leave it out."
        )
    cfg = dataclasses.replace(cfg, val_fraction=listing.val_fraction)  # the share used, as config.yaml records
    preprocess, size_choice = resolve_preprocess(cfg, spec, listing)
    hflip, flip_choice = resolve_hflip(cfg, listing)
    side = train_side(cfg, preprocess)
    size = preprocess.input_size
    scales = multiscale_plan(size, cfg.batch_size, scale_divisor(spec, size)) if cfg.multiscale else None
    stored = math.ceil(side * scales[-1][0] / size) if scales else side  # what the largest crops are cut from
    cache = "stream" if cfg.node_shards else cfg.cache
    data = load_splits(listing, preprocess, stored, cfg.workers, cache, cfg.memory_budget)
    if cfg.node_shards:
        check_node_shards(data, listing, info)
        log(
            f"  machine {info.node + 1} of {info.nodes} reads its own shards ({process_share(data.train, info)} images a process)"
        )
    log(data.describe())
    for report in data.reports:
        if report.skipped:
            log(f"  {report}")
    log(f"  image size {preprocess.input_size} ({size_choice})")
    log(f"  horizontal flips {'on' if hflip else 'off'} ({flip_choice})")
    log(f"  evaluation: {preprocess.describe()}")
    if scales:
        log("  multi-scale batches (side x batch): " + ", ".join(f"{s} x {b}" for s, b in scales))

    model_args = {**cfg.model_args, "image_size": preprocess.input_size}  # also lays out ViT's position grid
    model = create_model(cfg.model, num_classes=data.num_classes, **model_args)
    model.preprocess = preprocess
    if cfg.pretrained:
        from vitkit.weights import load_weights
        from vitkit.weights.hub import check_preset, resolve

        weights = resolve(cfg.pretrained)  # a file, or a hub name (downloaded once, then from the cache)
        check_preset(cfg.model, weights)
        result = load_weights(model, weights.weights, bgr_to_rgb=weights.bgr)
        log(f"  {result} from {cfg.pretrained}{' (BGR weights: the first conv now takes RGB)' if weights.bgr else ''}")
    model.to(device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else model.prefers_channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)

    lr = scaled_lr(cfg, info.world_size)
    if lr != cfg.lr:
        log(
            f"  lr {cfg.lr:g} for batch {cfg.lr_base_batch} -> {lr:.4g} for batch "
            f"{cfg.batch_size * cfg.accumulate * info.world_size} ({'linear' if cfg.optimizer == 'sgd' else 'square-root'} rule)"
        )
    optimizer = optimizers.build_optimizer(model, cfg.optimizer, lr, cfg.weight_decay, cfg.momentum)
    share = process_share(data.train, info) if cfg.node_shards else len(data.train) // info.world_size
    if scales:  # the step count varies a little between epochs; the schedule counts the mean
        batches_per_epoch = expected_steps(share, scales)
    else:
        batches_per_epoch = math.ceil(share / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulate)  # optimizer steps
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    ema = None
    if cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        warning = short_ema_warning(cfg.ema_decay, cfg.epochs * steps_per_epoch)
        if warning:
            log(warning)
    amp_dtype = resolve_amp(cfg.amp, device)
    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.freeze_epochs > 0,  # frozen features receive no gradient
        )
    if cfg.compile:
        train_model = torch.compile(train_model)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log(
        f"training {cfg.model} ({sum(p.numel() for p in model.parameters()):,} params) at {preprocess.input_size}px, "
        f"batch {cfg.batch_size}{f' x {cfg.accumulate} accumulated' if cfg.accumulate > 1 else ''} x {info.world_size} process(es), {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} on {device}"
        f"{' (channels_last)' if channels_last else ''} -> {out}"
    )
    return Run(
        cfg, info, device, out, data, model, train_model, model_args, preprocess, optimizer, scheduler,
        torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16), ema, amp_dtype,
        train_tf=BatchTransform(
            preprocess, cfg.augment, side, hflip, channels_last,
            cfg.auto_augment, cfg.auto_augment_ops, cfg.auto_augment_magnitude, cfg.random_erasing,
        ),
        mix=MixUpCutMix(data.num_classes, cfg.mixup, cfg.cutmix, cfg.label_smoothing)
        if cfg.mixup > 0 or cfg.cutmix > 0 else None,
        eval_batch_size=cfg.batch_size * 2,
        scales=scales,
    )  # fmt: skip


def short_ema_warning(decay: float, steps: int) -> str | None:
    """A warning when a weight EMA cannot forget where it started within the run: after ``steps`` optimizer steps
    the first step's weights still carry ``decay ** steps`` of the average (0.999 over 24 steps: 98%), and the
    saved model is close to an untrained one. None when that share is under half."""
    kept = decay**steps
    if kept < 0.5:
        return None
    suggested = 1 - 5 / steps  # keeps e^-5, under 1%, of the first step
    remedy = (
        f"Use --ema-decay {suggested:.3g} or lower, or train longer."
        if suggested > 0  # more than 5 steps
        else "A run this short gains nothing from an average: leave out --ema-decay, or train longer."
    )
    return (
        f"warning: --ema-decay {decay:g} averages over about {1 / (1 - decay):,.0f} optimizer steps, but this run "
        f"takes {steps:,}: the saved average would keep {kept:.0%} of the first step's weights. {remedy}"
    )


def trailing_validation(history: list[dict]) -> str | None:
    """A warning when validation top-1 has trailed training top-1 by more than TRAILING_GAP for the last
    TRAILING_EPOCHS epochs, with the likely causes; None otherwise."""
    recent = history[-TRAILING_EPOCHS:]
    if len(recent) < TRAILING_EPOCHS or any(h["train_top1"] - h["val_top1"] <= TRAILING_GAP for h in recent):
        return None
    last = recent[-1]
    return (
        f"warning: validation top-1 ({last['val_top1']:.1%}) has trailed training top-1 ({last['train_top1']:.1%}) "
        f"by more than {TRAILING_GAP:.0%} for {TRAILING_EPOCHS} epochs. Likely causes: the validation images differ "
        "from the training ones (another source, other labels, classes mixed up between folders); too few training "
        "images for the model (more data, --pretrained weights, stronger augmentation, more --weight-decay); or "
        "an augmentation that changes what a class means (--hflip false for text, digits, or left/right classes)."
    )


def restore(run: Run, log) -> None:
    """Continue from ``last.state.pt`` (weights, optimizer, schedule, scaler, EMA and history), or from
    ``partial.state.pt`` when that was saved later, inside the next epoch (with its step and random states)."""
    partial_path = run.out / PARTIAL
    partial = torch.load(partial_path, map_location="cpu", weights_only=True) if partial_path.is_file() else None
    state = load_state(run.out) if (run.out / "last.state.pt").is_file() else None
    if partial is not None and (state is None or partial["epoch"] == state["epoch"]):
        state, run.partial = partial, partial  # the partial epoch continues the last finished one
    elif state is None:
        state = load_state(run.out)  # says there is nothing to resume
    if state["model_name"] != run.cfg.model:
        raise ValueError(f"{run.out} holds a {state['model_name']} run, not {run.cfg.model}; give another --output.")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    run.start_epoch, run.history = state["epoch"], state["history"]
    run.best_top1, run.best_epoch = state["best_top1"], state["best_epoch"]
    if run.partial is not None:
        log(
            f"resuming {run.out} inside epoch {run.start_epoch + 1} of {run.cfg.epochs}, at step {run.partial['step'] + 1}"
        )
    else:
        log(f"resuming {run.out} after epoch {run.start_epoch} of {run.cfg.epochs}")


def save(run: Run, record: dict, is_best: bool) -> None:
    """``last`` every epoch (with the resume state), ``best`` when validation top-1 improved, metrics, plots."""
    meta = {
        "model": run.cfg.model,
        "model_args": run.model_args,
        "class_names": run.data.class_names,
        "preprocess": run.preprocess.to_dict(),  # exactly as training used it; `vitkit eval` reads it back
        "data": {"spec": run.cfg.data, "val_fraction": run.cfg.val_fraction, "split_seed": SPLIT_SEED},
        "eval_batch_size": run.eval_batch_size,
        "epoch": record["epoch"],
        "metrics": record,
        "ema": run.ema is not None,
        "hflip": run.train_tf.hflip,  # as resolved for the data (the config may say "auto"); `eval --tta` reads it
        "config": run.cfg.to_dict(),
    }
    state = training_state(run, epoch=record["epoch"])
    weights = run.eval_model.state_dict()
    save_checkpoint(run.out, "last", weights, meta, state)
    (run.out / PARTIAL).unlink(missing_ok=True)  # superseded (a kill before this leaves it stale: ignored)
    if is_best:
        save_checkpoint(run.out, "best", weights, meta)
    write_history(run.history, run.out)


def training_state(run: Run, epoch: int) -> dict:
    """What ``--resume`` restores: weights, optimizer, schedule, scaler, EMA, history; plain tensors and numbers."""
    return {
        "model_name": run.cfg.model,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "epoch": epoch,
        "history": run.history,
        "best_top1": run.best_top1,
        "best_epoch": run.best_epoch,
    }


def save_partial(run: Run, epoch: int, step: int, augment_gen: torch.Generator, meter, unreadable: list[str]) -> None:
    """The training state inside an epoch, after ``step`` batches (at an optimizer step): what a resumed run needs
    to continue at the next batch of the same order with the same random numbers, as if never stopped."""
    state = {
        **training_state(run, epoch=epoch),  # epoch: the one in progress (0-based), the number finished
        "step": step,
        "augment_rng": augment_gen.get_state(),
        "torch_rng": torch.get_rng_state(),  # dropout's
        "meter": {"loss_sum": meter.loss_sum, "confusion": meter.confusion, "top5_correct": meter.top5_correct},
        "unreadable": unreadable,
    }
    with atomic_path(run.out / PARTIAL) as tmp:
        torch.save(state, tmp)


def check_node_shards(data: DataSplits, listing, info: distributed.DistInfo) -> None:
    """One sentence, before any step, for each way ``--node-shards`` would train wrongly."""
    if not (isinstance(data.train, StreamSet) and data.train.files.shards is not None):
        raise OptionError(
            "node_shards", "reads a pack's shards machine by machine: give --data a `vitkit pack` folder."
        )
    if listing.val_fraction is not None:  # a held-out part of the training shards would differ between machines
        raise OptionError(
            "node_shards",
            "needs a pack with its own val split (packed from train/ and val/), held whole by every machine.",
        )
    if info.enabled and ("LOCAL_WORLD_SIZE" not in os.environ or info.world_size % info.local_world_size):
        raise OptionError("node_shards", "needs the same number of processes on every machine, started by torchrun.")
    shards = data.train.files.shards
    missing = [Path(s).name for i, s in enumerate(shards) if i % info.nodes == info.node and not Path(s).is_file()]
    if missing:
        raise OptionError(
            "node_shards",
            f"makes machine {info.node} of {info.nodes} read training shards {info.node}, {info.node} + {info.nodes}, "
            f"..., but {missing[0]} is not here: copy them, or give torchrun the --node_rank of the shards it holds.",
        )
    if process_share(data.train, info) < 2:
        raise OptionError(
            "node_shards",
            f"leaves fewer than 2 images per process from {len(shards)} training shards on {info.nodes} machine(s): "
            "pack with a smaller --shard-images.",
        )


def process_share(data: StreamSet, info: distributed.DistInfo) -> int:
    """Images each process trains on per epoch when every machine reads only its own shards."""
    return node_share(torch.from_numpy(data.files.shard), info.nodes, info.local_world_size)


def scale_divisor(spec, size: int) -> int:
    """What multi-scale sides are multiples of: the model's input multiple (32 for MobileViT, as ml-cvnets; the
    patch for ViT), or 8 where that leaves fewer than three sides and the model takes any size (MobileViT at
    64 px; a ViT keeps its patch, whatever the number of sides)."""
    multiple = spec.model_cls.input_multiple(spec.config)
    few = len(multiscale_plan(size, 1, multiple)) < 3
    return 8 if few and getattr(spec.model_cls, "any_input_size", False) else multiple


def scaled_lr(cfg: TrainConfig, world_size: int) -> float:
    """``cfg.lr``, or, with ``lr_base_batch``, the rate for the batch each optimizer step really averages over
    (batch x accumulate x processes): linear in the batch for SGD (Goyal et al. 2017), its square root for the
    adaptive optimizers (as timm's train.py, ``--lr-base-scale``). ``min_lr`` keeps its ratio to it."""
    if not cfg.lr_base_batch:
        return cfg.lr
    ratio = cfg.batch_size * cfg.accumulate * world_size / cfg.lr_base_batch
    return cfg.lr * (ratio if cfg.optimizer == "sgd" else math.sqrt(ratio))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step learning rate: linear warm-up, then constant or cosine down to ``min_lr``."""
    if cfg.schedule not in ("cosine", "constant"):
        raise ValueError(f"Unknown schedule '{cfg.schedule}'; choose cosine or constant.")
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp == "none":
        return None
    if amp in ("bf16", "fp16"):
        if device.type != "cuda":
            raise ValueError(f"--amp {amp} needs a GPU; on the CPU train with --amp none.")
        return torch.bfloat16 if amp == "bf16" else torch.float16
    raise ValueError(f"Unknown --amp '{amp}'; choose auto, bf16, fp16 or none.")


def accumulation_groups(batches: list[torch.Tensor], accumulate: int) -> list[tuple[bool, bool, int]]:
    """For each batch: (first of its group, last of its group, images in its group). Groups are ``accumulate``
    consecutive batches (the epoch's last group may be shorter); one optimizer step per group."""
    out = []
    for start in range(0, len(batches), accumulate):
        group = batches[start : start + accumulate]
        size = sum(len(b) for b in group)
        out += [(i == 0, i == len(group) - 1, size) for i in range(len(group))]
    return out


def train_one_epoch(run: Run, epoch: int) -> ClassificationMeter:
    cfg, info, device, data = run.cfg, run.info, run.device, run.data.train
    model = run.train_model
    model.train()
    if cfg.freeze_epochs:
        freeze_features(run.model, frozen=epoch < cfg.freeze_epochs)
    order_gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, 0))  # the same on every process
    augment_gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, 1 + info.rank))
    torch.manual_seed(seed_for(cfg.seed, epoch, 1000 + info.rank))  # dropout
    meter = ClassificationMeter(run.model.num_classes, device)
    if cfg.node_shards:  # this machine's images only, shared among its processes
        order = node_order(torch.from_numpy(data.files.shard), order_gen, info.nodes, info.node, info.local_world_size)
        rank, world = info.local_rank, info.local_world_size
    else:
        order, rank, world = epoch_order(data.labels, order_gen, cfg.class_balanced), info.rank, info.world_size
    if run.scales:
        batches, sides = multiscale_batches(order, run.scales, order_gen, rank, world)
    else:
        batches, sides = shard_batches(order, cfg.batch_size, rank, world), None
    groups = accumulation_groups(batches, cfg.accumulate)
    start, unreadable = 0, []
    if run.partial is not None and run.partial["epoch"] == epoch:  # continue where the saved state stopped
        start, unreadable = run.partial["step"], list(run.partial["unreadable"])
        augment_gen.set_state(run.partial["augment_rng"])
        torch.set_rng_state(run.partial["torch_rng"])
        for name, value in run.partial["meter"].items():
            getattr(meter, name).copy_(value)
        run.partial = None
    workers = decode_workers(cfg, data)
    stream = data.batches(batches[start:], workers, pin=device.type == "cuda")
    bar = progress(
        stream, total=len(batches), initial=start, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
        enabled=info.is_main,
    )  # fmt: skip
    # inside-epoch checkpoints: one process only (with several, each would need its own random states saved)
    saving = cfg.checkpoint_minutes > 0 and not info.enabled
    saved_at = time.monotonic()
    for step, (images, idx, skipped) in enumerate(bar, start=start):
        unreadable += skipped
        check_unreadable(unreadable, len(data) // info.world_size, cfg, epoch)
        first, last, group_size = groups[step]
        if len(idx) < 2 and len(skipped):  # unreadable files left one image or none, too few to train BatchNorm on
            if info.enabled:  # the other processes are waiting for this one's gradients
                raise ValueError(
                    f"A training batch was nearly all unreadable files ({', '.join(skipped[:3])}); fix them."
                )
            if first:
                run.optimizer.zero_grad(set_to_none=True)
            if last:
                optimizer_step(run)
            continue
        x = run.train_tf(images.to(device, non_blocking=True), augment_gen, sides[step] if sides else None)
        y = data.labels[idx].to(device, non_blocking=True)
        target = y
        if run.mix is not None:  # soft targets; the meter still scores each image against its own label
            x, target = run.mix(x, y, augment_gen)
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:  # DDP averages gradients across processes once per optimizer step, not per batch
            with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
                logits = model(x)
            smoothing = cfg.label_smoothing if run.mix is None else 0.0  # mixed targets are smoothed already
            loss = F.cross_entropy(logits.float(), target, label_smoothing=smoothing)
            check_finite(loss, epoch, step, cfg, info)
            if first:
                run.optimizer.zero_grad(set_to_none=True)
            # each batch's mean loss weighted by its share of the group: the gradient of the group's mean loss
            run.scaler.scale(loss * (len(idx) / group_size)).backward()
        if last:
            optimizer_step(run)
        meter.update(logits.float(), y, loss)
        if last and saving and time.monotonic() - saved_at > cfg.checkpoint_minutes * 60 and step + 1 < len(batches):
            save_partial(run, epoch, step + 1, augment_gen, meter, unreadable)
            saved_at = time.monotonic()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{meter.loss:.4f}", acc=f"{meter.top1:.2%}")
    meter.all_reduce()
    meter.unreadable, meter.steps = unreadable, len(batches)
    return meter


def decode_workers(cfg: TrainConfig, data) -> int:
    """Processes decoding files for a pass over ``data``: none for images held in memory."""
    return (cfg.workers or default_workers()) if isinstance(data, StreamSet) else 0


def optimizer_step(run: Run) -> None:
    """The end of a group of batches: clip, step, schedule, average."""
    if run.cfg.clip_grad:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.model)


EMA_BN_IMAGES = 4096  # plenty for per-channel means and variances: about 2% of an epoch's work on Fashion-MNIST


def refresh_ema_batchnorm(run: Run, epoch: int) -> None:
    """Recompute the weight average's BatchNorm statistics on up to ``EMA_BN_IMAGES`` augmented training images.

    An average of weights does not produce the average of their activations: the running statistics averaged
    beside the weights belong to the models along the way, not to their average. While the learning rate is
    high they part far enough that the average's outputs collapse (digits, 8 epochs at lr 2e-3, decay 0.99:
    26.7% top-1 with the averaged statistics, 99.2% with recomputed ones). SWA recomputes them for its average
    the same way (``update_bn``; Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima").
    """
    if run.ema is None or epoch < run.cfg.freeze_epochs:
        return  # frozen features keep the released statistics, in the model and its average alike
    from torch.optim.swa_utils import update_bn

    cfg, data = run.cfg, run.data.train
    generator = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, 500))  # the same images on every process
    chosen = torch.randperm(len(data), generator=generator)[:EMA_BN_IMAGES]
    batches = [b for b in chosen.split(cfg.batch_size) if len(b) > 1]  # BatchNorm needs two values per channel
    workers = decode_workers(cfg, data)
    inputs = (
        run.train_tf(images.to(run.device), generator)
        for images, _, _ in data.batches(batches, workers)
        if len(images) > 1  # unreadable files may leave fewer
    )
    update_bn(inputs, run.ema.module)


def check_unreadable(unreadable: list[str], planned: int, cfg: TrainConfig, epoch: int) -> None:
    """Files met unreadable while streaming are skipped; too many of them stop the run in one sentence."""
    if len(unreadable) > cfg.max_unreadable * planned:
        shown = ", ".join(unreadable[:3])
        raise ValueError(
            f"{len(unreadable)} of this process's {planned} training files were unreadable in epoch {epoch + 1} "
            f"(more than --max-unreadable {cfg.max_unreadable:g}), e.g. {shown}; fix or remove them, then resume."
        )


def freeze_features(model: nn.Module, frozen: bool) -> None:
    """Fine-tuning's first epochs: everything but the head (``head`` and its dropout, ``head_drop``) takes no
    gradient (so the optimizer skips it) and runs in eval mode (BatchNorm keeps the released statistics, as
    Keras' transfer-learning guide advises)."""
    for name, p in model.named_parameters():
        if not name.startswith("head."):
            p.requires_grad_(not frozen)
    if frozen:
        for name, child in model.named_children():
            if not name.startswith("head"):
                child.eval()


def check_finite(loss: torch.Tensor, epoch: int, step: int, cfg: TrainConfig, info) -> None:
    bad = (~torch.isfinite(loss.detach())).int()
    if info.enabled:
        torch.distributed.all_reduce(bad)
    if bad.item():
        raise TrainingDiverged(
            f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint is kept in "
            f"{cfg.resolved_output()}. Lower --lr (now {cfg.lr}), add --clip-grad 1.0 or use --amp none, then retry."
        )


def write_history(history: list[dict], folder: Path) -> None:
    """metrics.json, metrics.csv and the loss / top-1 / top-5 plots."""
    atomic_write_text(folder / "metrics.json", json.dumps(history, indent=2))
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for record in history for key in record))  # a resumed run may add some
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(folder / "metrics.csv", buffer.getvalue())
    from vitkit.plots import plot_history

    plot_history(history, folder)

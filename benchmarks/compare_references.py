"""vitkit against timm and transformers: same weights, same machine, one run.

    PYTHONPATH=. python benchmarks/compare_references.py [--models mobilevit_xxs,vit_b16] [--modes eager,compile]
                                                         [--rounds 5] [--device cpu|cuda] [--dtype fp32|bf16]
                                                         [--also mobilenetv3_large_100]

Needs timm (hence torchvision: the torch==2.14.1 torchvision==0.29.1 pair, a benchmark-only
environment) and transformers. For each model it builds timm's and transformers' version with random,
perturbed weights, loads timm's into vitkit through ``vitkit.load_weights`` (transformers' too, to check
both mappings), checks the logits agree within 1e-4 (fp32), then times, interleaving the
implementations round by round so that drift on a noisy machine hits all of them alike:

  latency at batch 1 (median), inference img/s at batch 32, training img/s at batch 32 (forward,
  backward, AdamW step), and the peak memory of a training step,

for eager and torch.compile'd models (``--modes compile-vitkit``: vitkit's compiled against the references
run eagerly, in the same rounds). ``vitkit`` is the model as trained; ``vitkit-fused`` has its
BatchNorms folded into the convolutions (what eval, bench and export use); ``vitkit-nodrop-cl`` trains with
timm's dropout (none) instead of the paper's. Prints a table with ratios
against timm, then one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

import vitkit
from vitkit.models import fuse

TIMM = {
    "mobilevit_xxs": "mobilevit_xxs",
    "mobilevit_xs": "mobilevit_xs",
    "mobilevit_s": "mobilevit_s",
    **{f"mobilevitv2_{w}": f"mobilevitv2_{w}" for w in ("050", "075", "100", "125", "150", "175", "200")},
    "vit_b16": "vit_base_patch16_224",
}
# MobileViTv3 has no reference implementation outside its authors' (non-commercial) repository: no timm row


class HFLogits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def perturb_(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def hf_model(name: str) -> nn.Module:
    import transformers

    if name == "vit_b16":
        config = transformers.ViTConfig(layer_norm_eps=1e-6, num_labels=1000)
        return HFLogits(transformers.ViTForImageClassification(config))
    if name.startswith("mobilevitv2_"):
        config = transformers.MobileViTV2Config(width_multiplier=int(name[-3:]) / 100, num_labels=1000)
        return HFLogits(transformers.MobileViTV2ForImageClassification(config))
    sizes = {
        "mobilevit_xxs": dict(
            hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0
        ),
        "mobilevit_xs": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
        "mobilevit_s": dict(hidden_sizes=[144, 192, 240], neck_hidden_sizes=[16, 32, 64, 96, 128, 160, 640]),
    }[name]
    return HFLogits(
        transformers.MobileViTForImageClassification(transformers.MobileViTConfig(num_labels=1000, **sizes))
    )


def build(name: str, device: torch.device, also: list[str]) -> tuple[dict[str, nn.Module], int]:
    """``also``: other timm models timed in the same rounds (channels_last) for context, such as
    mobilenetv3_large_100, the network a phone developer compares with; they share no weights."""
    import timm

    timm_model = perturb_(timm.create_model(TIMM[name], pretrained=False)).eval()
    hf = perturb_(hf_model(name)).eval()
    ours = vitkit.create_model(name).eval()
    vitkit.load_weights(ours, hf.model.state_dict())  # the transformers mapping ...
    x = torch.rand(3, 3, ours.preprocess.input_size, ours.preprocess.input_size)
    with torch.no_grad():
        assert (ours(x) - hf(x)).abs().max() < 1e-4, "transformers weights gave other logits"
        vitkit.load_weights(ours, timm_model.state_dict())  # ... and the timm one, which the timings use
        reference = timm_model(x)
        for label, model in (("vitkit", ours), ("vitkit-fused", fuse(ours))):
            diff = (model(x) - reference).abs().max().item()
            assert diff < 1e-4, f"{label} differs from timm by {diff}"
    # transformers keeps its own random weights: timings do not depend on the values. "-cl": the model
    # and its input in channels_last memory order
    models = {"timm": timm_model, "transformers": hf, "vitkit": ours, "vitkit-fused": fuse(ours)}
    if name.startswith("mobilevit"):
        models["timm-cl"] = copy.deepcopy(timm_model).to(memory_format=torch.channels_last)
        models["vitkit-cl"] = copy.deepcopy(ours).to(memory_format=torch.channels_last)
        models["vitkit-fused-cl"] = fuse(ours).to(memory_format=torch.channels_last)
        # timm's presets train without dropout, vitkit's with the paper's (0.05-0.1): the same regularisation as
        # timm's, for a like-for-like training figure
        rates = {f.name: 0.0 for f in dataclasses.fields(ours.config) if f.name.endswith("drop_rate")}
        bare = vitkit.create_model(name, **rates)
        bare.load_state_dict(ours.state_dict())
        models["vitkit-nodrop-cl"] = bare.to(memory_format=torch.channels_last)
    for other in also:
        models[f"{other}-cl"] = timm.create_model(other).eval().to(memory_format=torch.channels_last)
    return {k: m.to(device) for k, m in models.items()}, ours.preprocess.input_size


# eager: nothing compiled; compile: every implementation; compile-vitkit: vitkit's alone, timed in the same rounds
# as the references run eagerly (what a user of vitkit --compile gets against a user of timm who does not compile)
MODES = ("eager", "compile", "compile-vitkit")


def compiled(mode: str, implementation: str) -> bool:
    return mode == "compile" or (mode == "compile-vitkit" and implementation.startswith("vitkit"))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def measure(models: dict[str, nn.Module], size: int, device, dtype, rounds: int, batch: int, heavy: bool) -> dict:
    """Median over rounds; each round runs every implementation once (interleaved)."""
    x1 = torch.rand(1, 3, size, size, device=device)
    xb = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    samples = {name: {"latency_ms": [], "infer_img_s": [], "train_img_s": []} for name in models}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items() if "fused" not in name}
    iters = 1 if heavy else 3
    cl = {
        "x1": x1.contiguous(memory_format=torch.channels_last),
        "xb": xb.contiguous(memory_format=torch.channels_last),
    }
    for _ in range(rounds):
        for name, model in models.items():
            model.eval()
            a, b = (cl["x1"], cl["xb"]) if name.endswith("-cl") else (x1, xb)
            with torch.no_grad(), autocast(device, dtype):
                samples[name]["latency_ms"].append(
                    1000 * time_call(lambda: model(a), device, 2, 10 if not heavy else 3)
                )
                samples[name]["infer_img_s"].append(batch / time_call(lambda: model(b), device, 1, iters))
            if name in optimizers:
                model.train()
                opt = optimizers[name]

                def step():
                    with autocast(device, dtype):
                        loss = nn.functional.cross_entropy(model(b).float(), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                samples[name]["train_img_s"].append(batch / time_call(step, device, 1, iters))
    return {
        name: {k: round(statistics.median(v), 2) if v else None for k, v in s.items()} for name, s in samples.items()
    }


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child_peak_rss_mb(name: str, impl: str, size: int, batch: int) -> float:
    """Peak resident memory added by one training step (forward + backward), in this fresh process:
    Linux's peak-RSS mark is reset (clear_refs 5) right before the step."""
    import timm

    model = {"timm": lambda: timm.create_model(TIMM[name]), "transformers": lambda: hf_model(name),
             "vitkit": lambda: vitkit.create_model(name)}[impl]().train()  # fmt: skip
    x = torch.rand(batch, 3, size, size)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kib("VmRSS")
    model(x).float().sum().backward()
    return (_proc_status_kib("VmHWM") - before) / 1024


def peak_train_memory_mb(
    model: nn.Module, size: int, batch: int, device, name: str = "", impl: str = ""
) -> float | None:
    if device.type != "cuda":  # CPU: measured in a fresh process so that no cached memory hides any
        import subprocess

        proc = subprocess.run(
            [sys.executable, __file__, "--child-peak", f"{name},{impl},{size},{batch}"], capture_output=True, text=True
        )
        return round(float(proc.stdout.split()[-1]), 1) if proc.returncode == 0 else None
    model.train()
    x = torch.rand(batch, 3, size, size, device=device)
    torch.cuda.reset_peak_memory_stats(device)
    model(x).float().sum().backward()
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilevit_xxs,mobilevit_xs,mobilevit_s,vit_b16")
    parser.add_argument(
        "--modes", default="eager", help="eager,compile,compile-vitkit (vitkit compiled, the rest eager)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--variants", help="comma-separated subset, e.g. timm,vitkit-cl,vitkit-fused-cl (default: all)")
    parser.add_argument("--also", default="", help="other timm models timed alongside, e.g. mobilenetv3_large_100")
    parser.add_argument("--child-peak", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_peak:
        name, impl, size, batch = args.child_peak.split(",")
        print(child_peak_rss_mb(name, impl, int(size), int(batch)))
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # as timm's own benchmark script; every implementation alike
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    import timm
    import transformers

    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads"
        + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__},
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "command": " ".join(sys.argv),
        "results": {},
    }
    for name in args.models.split(","):
        also = [m for m in args.also.split(",") if m]
        models, size = build(name, device, also)
        if args.variants:
            keep = args.variants.split(",") + [f"{m}-cl" for m in also]
            if not any(k in ("timm", "timm-cl") for k in keep):
                keep.append("timm")  # the table's base
            models = {k: v for k, v in models.items() if k in keep}
        for mode in args.modes.split(","):
            if mode not in MODES:
                raise SystemExit(f"--modes: {mode} is none of {', '.join(MODES)}")
            run = {k: torch.compile(m) if compiled(mode, k) else m for k, m in models.items()}
            heavy = name == "vit_b16" and device.type == "cpu"
            result = measure(run, size, device, dtype, args.rounds if not heavy else 2, args.batch_size, heavy)
            for impl, model in models.items():
                measured = impl in ("timm", "transformers", "vitkit") and mode == "eager"
                result[impl]["peak_train_mb"] = (
                    peak_train_memory_mb(model, size, args.batch_size, device, name, impl) if measured else None
                )
            report["results"][f"{name}@{size}/{mode}"] = result
            base = result["timm"] if "timm" in result else result["timm-cl"]
            print(f"\n{name} at {size}px, {mode}, {args.dtype}, batch {args.batch_size} on {device}")
            print(
                f"{'':<14}{'latency b1 ms':>15}{'infer img/s':>13}{'train img/s':>13}{'vs base infer':>15}{'vs base train':>15}{'train peak MB':>15}"
            )
            for impl, r in result.items():
                ti = f"{r['infer_img_s'] / base['infer_img_s']:.2f}x"
                tt = f"{r['train_img_s'] / base['train_img_s']:.2f}x" if r["train_img_s"] else "-"
                train = f"{r['train_img_s']:.1f}" if r["train_img_s"] else "-"
                peak = f"{r['peak_train_mb']:.0f}" if r["peak_train_mb"] else "-"
                print(
                    f"{impl:<14}{r['latency_ms']:>15.2f}{r['infer_img_s']:>13.1f}{train:>13}{ti:>15}{tt:>15}{peak:>15}"
                )
    print(json.dumps(report))


if __name__ == "__main__":
    main()

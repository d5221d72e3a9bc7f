"""Released weights by name: ``timm/mobilevit_xxs.cvnets_in1k``, ``apple/mobilevit-xx-small``,
``google/vit-base-patch16-224`` (a Hugging Face Hub repository, optionally ``@revision``), a URL such as
ml-cvnets' release files (``vitkit.weights.urls``), or a local file.

Downloads go through huggingface_hub: its cache (``HF_HOME``), its offline mode (``HF_HUB_OFFLINE=1``), its
endpoint setting (``HF_ENDPOINT``), revision pinning, and its atomic writes (a file is renamed into the
cache only once complete). The repository's own ``config.json`` says which vitkit preset the weights fit,
their class names, and whether they take BGR input (Apple's MobileViT weights do; transformers' image
processor flips the channels for them).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

HUB_NAME = re.compile(r"^(?:hf-hub:)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TIMM_VIT = {"vit_base_patch16_224": "vit_b16", "vit_small_patch16_224": "vit_s16", "vit_tiny_patch16_224": "vit_ti16"}
MOBILEVIT_SIZES = {(64, 80, 96): "mobilevit_xxs", (96, 120, 144): "mobilevit_xs", (144, 192, 240): "mobilevit_s"}
VIT_WIDTHS = {768: "vit_b16", 384: "vit_s16", 192: "vit_ti16"}


@dataclass
class Pretrained:
    weights: Path  # a file load_weights reads
    preset: str | None = None  # the vitkit preset the weights fit, when their config says
    class_names: list[str] = field(default_factory=list)
    bgr: bool = False  # trained on BGR images: load_weights(bgr_to_rgb=True) makes the model take RGB
    source: str = ""  # what was asked for
    image_size: int | None = None  # the size the weights were trained at, when their source says


def is_hub_name(spec: str) -> bool:
    from vitkit.weights.urls import is_url

    return is_url(spec) or (not Path(spec).exists() and HUB_NAME.match(spec) is not None)


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k (ILSVRC 2012) class names in class-index order: WordNet's lemmas of the sorted
    synset IDs, as transformers' ``id2label`` and timm's ``ImageNetInfo`` give them."""
    return (Path(__file__).parent / "imagenet1k_classes.txt").read_text().splitlines()


def resolve(spec: str | os.PathLike) -> Pretrained:
    """A local weights file as it is, or a hub repository's or URL's weights (downloaded once, then cached)."""
    from vitkit.weights.urls import cvnets_release, download_weights, is_url

    spec = str(spec)
    if is_url(spec):
        preset, bgr, size = cvnets_release(spec)
        names = imagenet_classes() if preset else []  # every ml-cvnets classification release is ImageNet-1k
        return Pretrained(download_weights(spec), preset, names, bgr, spec, size)
    if not is_hub_name(spec):
        if not Path(spec).exists():
            raise FileNotFoundError(
                f"No weights at {spec}: give a file, a URL, or a Hugging Face Hub name such as "
                "apple/mobilevit-xx-small."
            )
        return Pretrained(Path(spec), source=spec)
    match = HUB_NAME.match(spec)
    repo, revision = match["repo"], match["revision"]
    config = json.loads(_download(repo, "config.json", revision).read_text())
    weights, not_cached = None, None
    for name in WEIGHT_FILES:  # the first the repository has (offline: the first the cache has)
        try:
            weights = _download(repo, name, revision, missing_ok=True)
        except FileNotFoundError as e:
            not_cached = not_cached or e
            continue
        if weights is not None:
            break
    if weights is None:
        raise not_cached or FileNotFoundError(f"{repo} holds no {' or '.join(WEIGHT_FILES)}; is it a model repository?")
    bgr = False
    if config.get("model_type", "").startswith("mobilevit"):  # Apple's weights, as transformers ships them
        processor = _download(repo, "preprocessor_config.json", revision, missing_ok=True)
        bgr = processor is not None and bool(json.loads(processor.read_text()).get("do_flip_channel_order", False))
    names = class_names(config) or (imagenet_classes() if _imagenet_1k(config) else [])
    return Pretrained(weights, infer_preset(config), names, bgr, spec)


def _imagenet_1k(config: dict) -> bool:
    """A timm config without class names whose weights were trained on ImageNet-1k (tags such as cvnets_in1k,
    augreg_in21k_ft_in1k): their 1,000 outputs are ImageNet-1k's classes."""
    tag = (config.get("pretrained_cfg") or {}).get("tag") or ""
    return config.get("num_classes") == 1000 and (tag.endswith("in1k") or not tag)


def _download(repo: str, filename: str, revision: str | None, missing_ok: bool = False) -> Path | None:
    try:
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise ImportError("Weights by hub name need huggingface_hub: pip install 'vitkit[hub]'.") from None
    try:
        return Path(
            huggingface_hub.hf_hub_download(
                repo, filename, revision=revision, endpoint=os.environ.get("HF_ENDPOINT") or None
            )
        )
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its parent class
        raise FileNotFoundError(
            f"{repo}/{filename} is not in the cache and the hub cannot be reached (offline mode, or no network); "
            "download it once while online."
        ) from None
    except EntryNotFoundError:
        if missing_ok:
            return None
        raise FileNotFoundError(f"{repo} has no {filename}; is it a model repository?") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"No repository {repo} on the Hugging Face Hub (or it is private); check the name."
        ) from None
    except Exception as e:  # network and protocol errors (httpx's own classes), a transfer cut short, a full disk
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"Could not download {repo}/{filename} ({reason}); nothing was kept, try again.") from None


def infer_preset(config: dict) -> str | None:
    """The vitkit preset a timm or transformers ``config.json`` describes, or None."""
    from vitkit.models import list_models

    if "architecture" in config:  # timm
        arch = config["architecture"]
        preset = TIMM_VIT.get(arch, arch)
        return preset if preset in list_models() else None
    kind = config.get("model_type")
    if kind == "mobilevit":
        return MOBILEVIT_SIZES.get(tuple(config.get("hidden_sizes", ())))
    if kind == "mobilevitv2":
        return f"mobilevitv2_{round(100 * config.get('width_multiplier', 1.0)):03d}"
    if kind == "vit" and config.get("patch_size") == 16:
        return VIT_WIDTHS.get(config.get("hidden_size"))
    return None


def class_names(config: dict) -> list[str]:
    """transformers' ``id2label``, or timm's ``label_names``; [] when the config has neither."""
    if "id2label" in config:
        labels = config["id2label"]
        return [labels[k] for k in sorted(labels, key=int)]
    return list(config.get("label_names") or config.get("pretrained_cfg", {}).get("label_names") or [])


def check_preset(model: str, weights: Pretrained) -> None:
    """One sentence when the weights' own config names another preset than the one asked for."""
    if weights.preset is not None and weights.preset != model:
        raise ValueError(
            f"{weights.source} holds {weights.preset} weights, not {model}; use --model {weights.preset} "
            "(or leave --model out: it is inferred from the weights)."
        )

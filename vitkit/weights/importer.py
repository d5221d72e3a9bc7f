"""A run folder from weights trained elsewhere (`vitkit import`): the keras.io example's checkpoint.weights.h5,
a timm or transformers file, a hub name or URL. The folder then works with every command that takes a run:
``vitkit predict``, ``eval`` (given data), ``export`` (the TFLite file the Keras example's own converter fails
to write), ``bench`` and ``serve``.
"""

from __future__ import annotations

from pathlib import Path

from vitkit.checkpoint import save_checkpoint


def import_weights(
    weights: str | Path,
    model: str | None = None,
    output: str | Path | None = None,
    class_names: list[str] | None = None,
    data: str | None = None,
    val_fraction: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``OUTPUT/best.safetensors`` + ``best.json`` for ``weights`` loaded into ``model``.

    The classes, in the order the weights were trained with, are ``class_names``, else those of ``data`` (a
    data spec, whose folder names sort alphabetically), else the weights' own (hub configs, ImageNet releases).
    ``data`` is also recorded as the run's data, so ``vitkit eval`` and ``export`` find their images.
    """
    from vitkit.data import list_data
    from vitkit.models import create_model
    from vitkit.training.trainer import SPLIT_SEED
    from vitkit.weights import load_weights
    from vitkit.weights.hub import check_preset, resolve

    source = resolve(weights)
    model = model or source.preset
    if model is None:
        raise ValueError(f"Say which model {weights} holds: --model NAME (see `vitkit models`).")
    check_preset(model, source)
    listing = list_data(data, val_fraction, SPLIT_SEED) if data else None
    names = class_names or (listing.class_names if listing else None) or source.class_names
    if not names:
        raise ValueError(
            "Name the classes in the order the weights were trained with: --classes a,b,c (or --data with their images)."
        )
    out = Path(output or f"runs/imported-{model}")
    if (out / "best.json").exists() and not overwrite:
        raise ValueError(f"{out} already holds a run; give another --output, or --overwrite to replace it.")
    net = create_model(model, num_classes=len(names))
    result = load_weights(net, source.weights, bgr_to_rgb=source.bgr)
    if result.head_skipped:
        raise ValueError(f"{weights} does not fit {len(names)} classes ({result.head_skipped}); check --classes.")
    meta = {
        "model": model,
        "model_args": {"image_size": net.preprocess.input_size},
        "class_names": list(names),
        "preprocess": net.preprocess.to_dict(),  # the preset's: what the weights' own training evaluated with
        "data": {
            "spec": data,
            "val_fraction": listing.val_fraction if listing else None,
            "split_seed": SPLIT_SEED,
        },
        "eval_batch_size": 64,
        "epoch": 0,
        "metrics": {},
        "ema": False,
        "imported_from": str(weights),
    }
    return save_checkpoint(out, "best", net.state_dict(), meta)

"""vitkit against Keras itself on the keras.io examples' models: the same function, one process, one run.

    /tmp/kerasenv/bin/python benchmarks/compare_keras.py [--models mobilevit_xxs_keras,vit_cifar] [--rounds 3]
        [--batch-size 64] [--threads 2] [--xla] [--vitkit-tflite a.tflite,b.tflite]

Needs TensorFlow's CPU build and Keras 3 beside the CPU torch, in a benchmark-only environment:

    python -m venv /tmp/kerasenv
    /tmp/kerasenv/bin/pip install torch==2.13.0 tensorflow==2.21.0 keras==3.15.1 -e .  # vitkit and its deps

Both models are written here as the keras.io examples build them (the MobileViT example, and the small
CIFAR-10 ViT with a class token). Keras' random weights are loaded into vitkit's preset (the MobileViT
through ``vitkit.load_weights`` on the example's own ``.weights.h5`` format) and the probabilities are
checked to agree within 1e-4 before anything is timed. Then, interleaving the implementations round by
round so that drift on a noisy machine hits all alike:

  training img/s: Keras ``model.train_on_batch`` (the example's optimizer and loss; Keras compiles it with
  ``tf.function``, and without XLA on a CPU-only machine, its "auto" choice) against one vitkit step
  (forward, backward, optimizer) in training mode, dropout included on both sides;
  inference img/s: a ``tf.function`` of the model in inference mode against vitkit's eval model with its
  BatchNorms folded (what ``vitkit predict`` runs);

The process raises glibc's mmap threshold as ``vitkit train`` does (``vitkit.training.memory``), which
applies to TensorFlow's allocations too; ``--default-malloc`` leaves it alone. ``--xla`` adds Keras with
``jit_compile=True`` (XLA) for training and inference, and ``--vitkit-compile`` vitkit through
``torch.compile`` (the counterpart of Keras' own graph compilation). ``--vitkit-tflite`` times files that
``vitkit export`` wrote for these presets beside the Keras model converted the example's way (dynamic-range
quantization, Flex ops allowed), all at batch 1 with TensorFlow's interpreter. Prints a table, then one JSON
line.

On a GPU, Keras runs on JAX (``--keras-backend jax``: XLA compiles every step, the way Keras 3 is fastest there,
and no TensorFlow GPU build is needed; the models are written with ``keras.ops`` so that one definition serves
both backends) and vitkit on CUDA; ``--bf16`` adds Keras' ``mixed_bfloat16`` policy and vitkit under bf16
autocast, and with ``--vitkit-compile`` the bf16 model compiled:

    PYTHONPATH=. python benchmarks/compare_keras.py --keras-backend jax --device cuda --bf16 --vitkit-compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import vitkit
from vitkit.export.api import read_sidecar
from vitkit.models import fuse
from vitkit.training.memory import keep_freed_memory
from vitkit.utils import quiet_output


def keras_modules():
    import keras
    from keras import layers

    return keras, layers


# --- the keras.io MobileViT example (Sayak Paul), layer for layer ---------------------------------------------


def keras_mobilevit(num_classes: int = 5, image_size: int = 256, dropout: float = 0.1):
    keras, layers = keras_modules()
    patch_size = 4  # the example's "patch": 2x2 pixels

    def conv_block(x, filters=16, kernel_size=3, strides=2):
        return layers.Conv2D(filters, kernel_size, strides=strides, activation="swish", padding="same")(x)

    def mv2(x, expanded, out, strides=1):
        m = layers.Conv2D(expanded, 1, padding="same", use_bias=False)(x)
        m = keras.activations.swish(layers.BatchNormalization()(m))
        if strides == 2:  # Keras applications' correct_pad: one pixel more after than before
            m = layers.ZeroPadding2D(padding=((0, 1), (0, 1)) if m.shape[1] % 2 == 0 else 1)(m)
        m = layers.DepthwiseConv2D(3, strides=strides, padding="same" if strides == 1 else "valid", use_bias=False)(m)
        m = keras.activations.swish(layers.BatchNormalization()(m))
        m = layers.BatchNormalization()(layers.Conv2D(out, 1, padding="same", use_bias=False)(m))
        return layers.Add()([m, x]) if x.shape[-1] == out and strides == 1 else m

    def transformer(x, depth, dim):
        for _ in range(depth):
            x1 = layers.LayerNormalization(epsilon=1e-6)(x)
            x2 = layers.Add()([layers.MultiHeadAttention(num_heads=2, key_dim=dim, dropout=dropout)(x1, x1), x])
            x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
            for units in (x.shape[-1] * 2, x.shape[-1]):
                x3 = layers.Dropout(dropout)(layers.Dense(units, activation="swish")(x3))
            x = layers.Add()([x3, x2])
        return x

    def mobilevit_block(x, depth, dim):
        local = conv_block(conv_block(x, dim, strides=1), dim, kernel_size=1, strides=1)
        tokens = local.shape[1] * local.shape[2] // patch_size
        y = transformer(layers.Reshape((patch_size, tokens, dim))(local), depth, dim)
        y = conv_block(layers.Reshape((*local.shape[1:-1], dim))(y), x.shape[-1], kernel_size=1, strides=1)
        return conv_block(layers.Concatenate(axis=-1)([x, y]), dim, strides=1)

    inputs = keras.Input((image_size, image_size, 3))
    x = conv_block(layers.Rescaling(scale=1.0 / 255)(inputs), 16)
    x = mv2(x, 32, 16)
    x = mv2(mv2(mv2(x, 32, 24, strides=2), 48, 24), 48, 24)
    x = mobilevit_block(mv2(x, 48, 48, strides=2), 2, 64)
    x = mobilevit_block(mv2(x, 128, 64, strides=2), 4, 80)
    x = mobilevit_block(mv2(x, 160, 80, strides=2), 3, 96)
    x = layers.GlobalAvgPool2D()(conv_block(x, 320, kernel_size=1, strides=1))
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


# --- the small ViT of the Keras CIFAR-10 example (class token; attention from one qkv Dense) ----------------


def keras_vit_cifar(num_classes: int = 10, image_size: int = 72):
    keras, layers = keras_modules()
    ops = keras.ops  # backend-neutral, so the same model runs on TensorFlow and on JAX (the GPU comparison)

    patch, dim, heads, depth = 6, 64, 4, 8
    tokens = (image_size // patch) ** 2

    class Patches(layers.Layer):
        def call(self, images):
            p = ops.image.extract_patches(images, patch, strides=patch, padding="valid")
            return ops.reshape(p, (-1, tokens, patch * patch * 3))  # [B, gh, gw, 108] -> [B, N, 108]

    class ClassTokenAndPosition(layers.Layer):
        def build(self, input_shape):
            self.cls = self.add_weight(shape=(1, 1, dim), initializer="zeros", name="cls")
            self.pos = self.add_weight(
                shape=(1, input_shape[1] + 1, dim), initializer=keras.initializers.RandomNormal(stddev=0.02), name="pos"
            )

        def call(self, x):
            cls = ops.broadcast_to(ops.cast(self.cls, x.dtype), (ops.shape(x)[0], 1, dim))
            return ops.concatenate([cls, x], axis=1) + ops.cast(self.pos, x.dtype)

    class Attention(layers.Layer):  # takes the qkv Dense's output
        def call(self, qkv):
            # [B, N+1, 3D] -> [B, N+1, 3, H, D/H] -> [3, B, H, N+1, D/H]
            qkv = ops.transpose(ops.reshape(qkv, (-1, tokens + 1, 3, heads, dim // heads)), (2, 0, 3, 1, 4))
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = ops.softmax(ops.matmul(q, ops.swapaxes(k, -1, -2)) / (dim // heads) ** 0.5, axis=-1)
            # [B, H, N+1, D/H] -> [B, N+1, H, D/H] -> [B, N+1, D]
            return ops.reshape(ops.transpose(ops.matmul(attn, v), (0, 2, 1, 3)), (-1, tokens + 1, dim))

    inputs = keras.Input((image_size, image_size, 3))
    x = ClassTokenAndPosition(name="embed")(layers.Dense(dim, name="patch_proj")(Patches()(inputs)))
    for i in range(depth):
        y = layers.Dense(3 * dim, name=f"b{i}_qkv")(layers.LayerNormalization(epsilon=1e-6, name=f"b{i}_ln1")(x))
        x = layers.Add()([layers.Dense(dim, name=f"b{i}_proj")(Attention()(y)), x])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"b{i}_ln2")(x)
        for j, units in enumerate((2 * dim, dim)):
            y = layers.Dropout(0.1)(layers.Dense(units, activation="gelu", name=f"b{i}_fc{j + 1}")(y))
        x = layers.Add()([y, x])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="head")(x[:, 0]))  # logits


def vit_cifar_state_dict(kmodel) -> dict[str, torch.Tensor]:
    """The Keras CIFAR ViT's weights under vitkit's names."""

    def w(name, i=0):
        return torch.from_numpy(np.asarray(kmodel.get_layer(name).weights[i].numpy()))

    kernel = w("patch_proj")  # [6*6*3, D], rows in (row, col, channel) order
    sd = {
        "patch_embed.proj.weight": kernel.T.reshape(-1, 6, 6, 3).permute(0, 3, 1, 2),  # [D, 108] -> [D, 3, 6, 6]
        "patch_embed.proj.bias": w("patch_proj", 1),
        "cls_token": w("embed", 0),
        "pos_embed": w("embed", 1),
        "norm.weight": w("norm"),
        "norm.bias": w("norm", 1),
        "head.weight": w("head").T,
        "head.bias": w("head", 1),
    }
    for i in range(8):
        for ours, theirs in (("norm1", "ln1"), ("norm2", "ln2")):
            sd[f"blocks.{i}.{ours}.weight"], sd[f"blocks.{i}.{ours}.bias"] = w(f"b{i}_{theirs}"), w(f"b{i}_{theirs}", 1)
        for ours, theirs in (("attn.qkv", "qkv"), ("attn.proj", "proj"), ("mlp.fc1", "fc1"), ("mlp.fc2", "fc2")):
            sd[f"blocks.{i}.{ours}.weight"], sd[f"blocks.{i}.{ours}.bias"] = (
                w(f"b{i}_{theirs}").T,
                w(f"b{i}_{theirs}", 1),
            )
    return sd


# --- the two sides -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def full_float32():
    """No TF32 on either side: on a GPU, JAX's matrix products and cuDNN's convolutions default to TF32 (10-bit
    mantissas), which moves the CIFAR ViT's probabilities by ~3e-4 (measured on an H200); the timings keep the
    defaults."""
    import keras

    precise = contextlib.nullcontext()
    if keras.backend.backend() == "jax":
        import jax

        precise = jax.default_matmul_precision("float32")
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with precise:
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


class Case:
    """One model on both sides: builders, inputs, optimizers, and the equality check."""

    def __init__(self, name: str, batch: int, folder: Path, device: torch.device = torch.device("cpu")):
        import keras

        keras.utils.set_random_seed(0)
        torch.manual_seed(0)
        self.name = name
        if name == "mobilevit_xxs_keras":
            self.size, self.classes = 256, 5
            build = keras_mobilevit
            self.make_optimizers = lambda: (
                keras.optimizers.Adam(learning_rate=0.002),
                lambda params: torch.optim.Adam(params, lr=0.002, eps=1e-7),
            )
            self.keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
            self.torch_loss = nn.CrossEntropyLoss(label_smoothing=0.1)
            self.keras_pixels = 255.0  # the example's model rescales by 1/255 itself; vitkit's pipeline does
        else:
            self.size, self.classes = 72, 10
            build = keras_vit_cifar
            self.make_optimizers = lambda: (
                keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4),
                lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4, eps=1e-7),
            )
            self.keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            self.torch_loss = nn.CrossEntropyLoss()
            self.keras_pixels = 1.0
        self.build_keras = lambda: build(self.classes, self.size)
        self.kmodel = self.build_keras()
        self.torch_model = vitkit.create_model(name, num_classes=self.classes)
        if name == "mobilevit_xxs_keras":
            path = folder / "keras.weights.h5"
            self.kmodel.save_weights(path)
            vitkit.load_weights(self.torch_model, path)
            self.torch_model = self.torch_model.to(memory_format=torch.channels_last)
        else:
            self.torch_model.load_state_dict(vit_cifar_state_dict(self.kmodel))
        self.device = device
        self.torch_model = self.torch_model.to(device)
        rng = np.random.default_rng(0)
        self.x_nhwc = rng.random((batch, self.size, self.size, 3), dtype=np.float32)  # [0, 1] pixels
        self.labels = rng.integers(0, self.classes, batch)
        self.x_torch = torch.from_numpy(self.x_nhwc).permute(0, 3, 1, 2)  # NHWC -> NCHW (a channels_last view)
        if name != "mobilevit_xxs_keras":
            self.x_torch = self.x_torch.contiguous()
        self.x_torch = self.x_torch.to(device)  # keeps the memory order
        self.x_keras = self.x_nhwc * self.keras_pixels
        self.y_keras = np.eye(self.classes, dtype=np.float32)[self.labels] if self.classes == 5 else self.labels

    def max_difference(self) -> float:
        """Largest difference of the two sides' probabilities, inference mode, both in full float32."""
        with full_float32():
            keras_out = np.array(self.kmodel(self.x_keras[:4], training=False))
            if self.name != "mobilevit_xxs_keras":
                keras_out = torch.softmax(torch.from_numpy(keras_out), -1).numpy()
            with torch.no_grad():
                ours = torch.softmax(self.torch_model.eval()(self.x_torch[:4]), -1).cpu().numpy()
        return float(np.abs(keras_out - ours).max())

    def implementations(self, xla: bool, compile_vitkit: bool = False, bf16: bool = False):
        """{label: (train_step, infer)}; each call runs one batch and returns when its results are ready."""
        import keras

        impls = {}
        if keras.backend.backend() == "jax":
            # JAX compiles every step through XLA (jit_compile=False would run op by op, which nobody does)
            for mixed in (False, True) if bf16 else (False,):
                impls["keras-xla-bf16" if mixed else "keras-xla"] = self.keras_steps(jit=True, mixed=mixed)
        else:
            for jit in (False, True) if xla else (False,):
                impls["keras-xla" if jit else "keras"] = self.keras_steps(jit=jit, mixed=False)
        variants = [(False, False)]  # (bf16, compiled)
        if bf16:
            variants.append((True, False))
        if compile_vitkit:  # with --bf16 only the bf16 model is compiled: a GPU user of torch.compile trains in bf16
            variants.append((bf16, True))
        for amp, compiled in variants:
            label = "vitkit" + ("-bf16" if amp else "") + ("-compiled" if compiled else "")
            impls[label] = self.vitkit_steps(compiled, amp)
        return impls

    def keras_steps(self, jit: bool, mixed: bool):
        """Keras' own training step (``train_on_batch``) and inference on one batch, on a copy of the weights;
        ``mixed``: Keras' ``mixed_bfloat16`` policy (bf16 compute, float32 variables)."""
        import keras

        if mixed:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            kmodel = self.build_keras()
        finally:
            keras.mixed_precision.set_global_policy("float32")
        kmodel.set_weights(self.kmodel.get_weights())
        kopt, _ = self.make_optimizers()
        kmodel.compile(optimizer=kopt, loss=self.keras_loss, jit_compile=jit)
        if keras.backend.backend() == "jax":
            import jax

            x, y = jax.device_put(self.x_keras), jax.device_put(self.y_keras)  # on the GPU when there is one
            # both return NumPy, which waits for the device
            return (lambda: kmodel.train_on_batch(x, y)), (lambda: kmodel.predict_on_batch(x))
        import tensorflow as tf

        infer = tf.function(lambda x: kmodel(x, training=False), jit_compile=jit)
        x, y = tf.constant(self.x_keras), tf.constant(self.y_keras)
        return (lambda: kmodel.train_on_batch(x, y)), (lambda: infer(x).numpy())

    def vitkit_steps(self, compiled: bool, bf16: bool = False):
        """A training step and a folded-model inference, eager or through ``torch.compile`` (what ``vitkit train
        --compile`` and ``vitkit bench --formats compile`` run), in float32 or under bf16 autocast (``vitkit train``'s
        default on a GPU); each trains its own copy of the weights."""
        import copy

        _, make_opt = self.make_optimizers()
        model = copy.deepcopy(self.torch_model)
        opt = make_opt(model.parameters())
        deployed = fuse(model).eval()
        train_model, infer_model = (torch.compile(model), torch.compile(deployed)) if compiled else (model, deployed)
        y = torch.from_numpy(self.labels).to(self.device)
        device = self.device

        def autocast():
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def train_step():
            model.train()
            with autocast():
                logits = train_model(self.x_torch)
            loss = self.torch_loss(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()

        def infer():
            with torch.inference_mode(), autocast():
                infer_model(self.x_torch)
            sync()

        return train_step, infer


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(
    case: Case, batch: int, rounds: int, xla: bool, log, compile_vitkit: bool = False, bf16: bool = False
) -> dict:
    impls = case.implementations(xla, compile_vitkit, bf16)
    for label, (train, infer) in impls.items():  # warm-up: tracing, XLA compilation, allocator pools
        log(f"  warming up {label}")
        train(), train(), infer(), infer()
    samples = {label: {"train_img_s": [], "infer_img_s": []} for label in impls}
    for r in range(rounds):
        for label, (train, infer) in impls.items():
            samples[label]["train_img_s"].append(batch / time_once(train))
            samples[label]["infer_img_s"].append(batch / min(time_once(infer) for _ in range(2)))
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v['train_img_s'][-1]:.1f}" for k, v in samples.items()))
    return {label: {k: round(statistics.median(v), 2) for k, v in s.items()} for label, s in samples.items()}


# --- TFLite: the example's converter against vitkit export -----------------------------------------------


def keras_tflite(kmodel, path: Path) -> str | None:
    """Convert as the keras.io example does (dynamic-range quantization, Flex ops allowed); None, or why it failed."""
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_keras_model(kmodel)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        with quiet_output():  # the converter prints every captured variable
            path.write_bytes(converter.convert())
        return None
    except Exception as e:  # noqa: BLE001 - reported in the table: whether the example's path works is the point
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:100]}"


def tflite_latencies_ms(files: dict[str, Path], threads: int, rounds: int, iters: int = 20) -> dict[str, float | str]:
    """Median batch-1 latency of each file under TensorFlow's interpreter, interleaved; why, for a file it cannot run."""
    import tensorflow as tf

    interpreters, failed = {}, {}
    for label, path in files.items():
        try:
            it = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
            inp = it.get_input_details()[0]
            it.set_tensor(inp["index"], np.full(inp["shape"], 100, dtype=inp["dtype"]))
            it.invoke()
        except (RuntimeError, ValueError) as e:  # e.g. Flex ops, which this interpreter does not link
            failed[label] = f"failed: {str(e).strip().splitlines()[-1][:140]}"
            continue
        interpreters[label] = it
    samples = {label: [] for label in interpreters}
    for _ in range(rounds):
        for label, it in interpreters.items():
            for _ in range(iters):
                samples[label].append(time_once(it.invoke))
    return {**{label: round(1000 * statistics.median(v), 2) for label, v in samples.items()}, **failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilevit_xxs_keras,vit_cifar")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--xla", action="store_true", help="also time Keras with jit_compile=True")
    parser.add_argument(
        "--vitkit-compile", action="store_true", help="also time vitkit through torch.compile (train --compile)"
    )
    parser.add_argument(
        "--vitkit-tflite",
        default="",
        help="comma-separated .tflite files that `vitkit export` wrote (for mobilevit_xxs_keras or vit_cifar, as "
        "their JSON says), timed at batch 1 beside the Keras model converted the example's way",
    )
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's mmap threshold alone (vitkit train raises it)"
    )
    parser.add_argument(
        "--keras-backend",
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        choices=["tensorflow", "jax"],
        help="jax: Keras on JAX, every step compiled by XLA (the GPU comparison: TensorFlow's GPU build is not needed)",
    )
    parser.add_argument("--device", default="cpu", help="vitkit's device (cuda: JAX takes the GPU too)")
    parser.add_argument(
        "--bf16", action="store_true", help="also time bf16: Keras' mixed_bfloat16 policy, vitkit under bf16 autocast"
    )
    args = parser.parse_args()

    os.environ["KERAS_BACKEND"] = args.keras_backend  # read once, when Keras is first imported
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX would take 75% of the GPU from torch
    if args.keras_backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(args.threads)
    if not args.default_malloc:  # as `vitkit train` does; process-wide, so Keras runs under it too
        keep_freed_memory()
    import keras

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest kernels, as XLA autotunes Keras' side

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(f"{name}:", file=sys.stderr)
            case = Case(name, args.batch_size, Path(tmp), device)
            diff = case.max_difference()
            print(f"  Keras and vitkit probabilities differ by at most {diff:.2e}", file=sys.stderr)
            if diff > 1e-4:
                raise SystemExit(f"{name}: the two sides compute different functions ({diff:.2e}); not timing them")
            log = lambda s: print(s, file=sys.stderr)  # noqa: E731
            results[name] = compare(case, args.batch_size, args.rounds, args.xla, log, args.vitkit_compile, args.bf16)
            results[name]["max_probability_difference"] = diff
            ours = [Path(f) for f in args.vitkit_tflite.split(",") if f and read_sidecar(f)[1]["model"] == name]
            if ours and args.keras_backend == "tensorflow":
                keras_file = Path(tmp) / f"{name}_keras.tflite"
                failure = keras_tflite(case.kmodel, keras_file)
                files = {} if failure else {"keras (the example's conversion)": keras_file}
                files.update({f"vitkit {f.name}": f for f in ours})
                results[name]["tflite_batch1_ms"] = tflite_latencies_ms(files, args.threads, args.rounds)
                if failure:
                    results[name]["tflite_batch1_ms"]["keras (the example's conversion)"] = f"failed: {failure}"

    malloc = "glibc default malloc" if args.default_malloc else "malloc thresholds raised (vitkit train's setting)"
    where = f"{args.threads} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"\nbatch {args.batch_size}, {where}, Keras on {args.keras_backend}, {malloc}, median of {args.rounds} rounds"
    )
    print(f"{'model':22} {'implementation':22} {'train img/s':>12} {'x Keras':>8} {'infer img/s':>12} {'x Keras':>8}")
    for name, rows in results.items():
        base = rows["keras"] if "keras" in rows else rows["keras-xla"]  # Keras' own default on that backend
        for label, row in rows.items():
            if not isinstance(row, dict) or "train_img_s" not in row:
                continue
            tr, inf = row["train_img_s"], row["infer_img_s"]
            print(
                f"{name:22} {label:22} {tr:12.1f} {tr / base['train_img_s']:8.2f} {inf:12.1f} "
                f"{inf / base['infer_img_s']:8.2f}"
            )
    for name, rows in results.items():
        for label, ms in rows.get("tflite_batch1_ms", {}).items():
            print(f"{name:22} TFLite, batch 1: {label:48} {ms if isinstance(ms, str) else f'{ms:.2f} ms'}")
    env = dict(
        malloc="glibc default" if args.default_malloc else "mmap/trim thresholds 1 GiB",
        torch=torch.__version__,
        keras=keras.__version__,
        keras_backend=args.keras_backend,
        backend_version=__import__(args.keras_backend).__version__,
        machine=platform.processor() + ("" if device.type == "cpu" else f", {torch.cuda.get_device_name(device)}"),
    )
    print(json.dumps(dict(results=results, batch_size=args.batch_size, threads=args.threads, **env)))


if __name__ == "__main__":
    main()

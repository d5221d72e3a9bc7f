#!/usr/bin/env bash
# The GPU comparisons, in one go on one CUDA machine (written for an H200 lease with a few minutes of device time):
#   1. vitkit against timm and transformers (benchmarks/compare_references.py): bf16, channels_last, eager;
#   2. the same for MobileViT-XXS with torch.compile on both sides;
#   3. vitkit against Keras on the keras.io examples' models (benchmarks/compare_keras.py): Keras on JAX, where XLA
#      compiles every step, against vitkit in bf16, eager and torch.compile'd.
# Needs torch with CUDA, timm, transformers and JAX with CUDA; Keras 3 as wheels in .whl/ if it is not installed
# (pip download keras namex optree for the machine's Python). Each stage has its own time limit, so that one
# failing leaves the others' figures. Logs go to $OUT (default /tmp/gpu_compare).
#
#   bash benchmarks/gpu_compare.sh [keras] [references] [references_compiled]     (default: all three)
#
# What each took on an H200 (2026-12-04), so that a lease can be planned: XLA compiles each Keras variant of the
# MobileViT in 60-100+ s (two variants did not fit 200 s), the CIFAR ViT stage ran in 93 s; eager references take
# ~70 s a model (building and checking on the CPU included); the compiled references (three models, train and
# eval graphs) did not fit 170 s. The whole script needs ~15 minutes.
set -u
OUT=${OUT:-/tmp/gpu_compare}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if ! python3 -c "import keras" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi -L
python3 -c "import torch, timm, transformers, jax, keras; print('torch', torch.__version__, 'timm', timm.__version__, \
'transformers', transformers.__version__, 'jax', jax.__version__, 'keras', keras.__version__)"
stage() {  # name, seconds, command...
    local name=$1 limit=$2; shift 2
    echo "== $name (at most ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
    echo "   rc $rc after $((SECONDS - start))s"
    grep -v '^{' "$OUT/$name.log" | tail -40
}
stages=${*:-keras references references_compiled}
want() { [[ " $stages " == *" $1 "* ]]; }
want keras && stage keras "${KERAS_LIMIT:-400}" python3 benchmarks/compare_keras.py --keras-backend jax --device cuda --bf16 \
    --vitkit-compile --batch-size 64 --rounds 5
want references && stage references "${REFS_LIMIT:-300}" python3 benchmarks/compare_references.py --device cuda --dtype bf16 \
    --models mobilevit_xxs,mobilevit_xs,mobilevit_s,mobilevitv2_100 --variants timm,transformers,timm-cl,vitkit-cl,vitkit-fused-cl \
    --also mobilenetv3_large_100 --batch-size 128 --rounds 5
want references_compiled && stage references_compiled "${COMPILE_LIMIT:-400}" python3 benchmarks/compare_references.py --device cuda --dtype bf16 \
    --models mobilevit_xxs --modes compile --variants timm-cl,vitkit-cl --batch-size 128 --rounds 5
true

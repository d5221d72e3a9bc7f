"""Keras' own training step on the keras.io MobileViT, recorded once by Keras itself.

Run in the benchmark environment of ``benchmarks/compare_keras.py`` (TensorFlow and Keras beside torch):

    PYTHONPATH=. /tmp/kerasenv/bin/python -m tests.keras_fixtures   # writes tests/data/keras_mobilevit_xxs/train_step.npz

It builds the example's model with its dropout rates set to 0 (dropout is random on both sides, so a
step can only be compared without it), loads the weights Keras wrote (``checkpoint.weights.h5``), and on
the six photos of ``expected.npz`` with fixed labels records, as the example compiles it (Adam, lr 0.002,
categorical cross-entropy with label smoothing 0.1 on the softmax output):

  ``loss_before``: the loss ``train_on_batch`` returns (training mode: BatchNorm on batch statistics);
  ``loss_after``: the same after one ``train_on_batch`` step;
  ``probabilities_after``: inference-mode probabilities after the step (moving statistics updated once).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FOLDER = Path(__file__).parent / "data" / "keras_mobilevit_xxs"
LABELS = np.array([0, 1, 2, 3, 4, 0])
LEARNING_RATE = 0.002
LABEL_SMOOTHING = 0.1


def main() -> None:
    import keras

    from benchmarks.compare_keras import keras_mobilevit

    expected = np.load(FOLDER / "expected.npz")
    x = expected["images_nhwc_uint8"].astype(np.float32)  # the model rescales by 1/255 itself
    y = np.eye(5, dtype=np.float32)[LABELS]
    model = keras_mobilevit(num_classes=5, image_size=256, dropout=0.0)
    model.load_weights(FOLDER / "checkpoint.weights.h5")
    assert np.abs(np.asarray(model(x, training=False)) - expected["probabilities"]).max() < 1e-5
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE), loss=loss)
    before = float(model.train_on_batch(x, y))  # the step's own loss, from its training-mode forward
    after = float(loss(y, model(x, training=True)))  # BatchNorm's moving statistics updated twice in all
    np.savez(
        FOLDER / "train_step.npz",
        labels=LABELS,
        loss_before=before,
        loss_after=after,
        probabilities_after=np.asarray(model(x, training=False)),
    )
    print(f"loss {before:.6f} -> {after:.6f}")


if __name__ == "__main__":
    main()

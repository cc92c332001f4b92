"""TensorFlow example: a small Keras classifier trained on iris, saved as a SavedModel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from inferbridge.examples.builders import SkipExample

__all__ = ["build_tensorflow", "train_iris_keras"]

_SEED = 0


def train_iris_keras() -> Any:
    """A 4-16-3 Keras MLP on the iris split (deterministic with a fixed seed)."""
    import keras

    from inferbridge.examples.build import iris_split

    X_train, X_test, y_train, y_test = iris_split()
    keras.utils.set_random_seed(_SEED)
    model = keras.Sequential(
        [
            keras.Input(shape=(4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(X_train, y_train, epochs=150, batch_size=len(X_train), verbose=0, shuffle=False)
    predicted = model.predict(X_test, verbose=0).argmax(axis=1)
    accuracy = float((predicted == y_test).mean())
    if accuracy < 0.9:
        raise RuntimeError(f"keras iris example reached only {accuracy:.3f} held-out accuracy")
    return model


def build_tensorflow(root: Path) -> None:
    """Write `iris_tensorflow`: a SavedModel whose serving_default returns named outputs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise SkipExample(f"tensorflow is not installed ({exc})") from None
    model = train_iris_keras()

    class Serving(tf.Module):  # type: ignore[misc]  # tensorflow is Any to mypy
        def __init__(self, keras_model: Any) -> None:
            super().__init__()
            self.model = keras_model

        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")]
        )
        def serve(self, input: Any) -> dict[str, Any]:
            logits = self.model(input, training=False)
            return {
                "probabilities": tf.nn.softmax(logits, axis=1),
                "label": tf.argmax(logits, axis=1, output_type=tf.int64),
            }

    module = Serving(model)
    model_dir = root / "iris_tensorflow"
    (model_dir / "1").mkdir(parents=True)
    tf.saved_model.save(
        module,
        str(model_dir / "1" / "model.savedmodel"),
        signatures={"serving_default": module.serve},
    )
    (model_dir / "config.yaml").write_text(
        "# A Keras MLP trained on iris, saved as a TensorFlow SavedModel; inputs and\n"
        "# outputs come from its serving_default signature.\n"
        "runtime: tensorflow\n"
    )


if __name__ == "__main__":
    from inferbridge.examples.builders import child_main

    child_main(build_tensorflow)

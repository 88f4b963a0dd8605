"""Builds examples/digits_cnn.keras and examples/digits_test.npz, the model `make demo`
compiles: a small CNN trained for a few epochs on scikit-learn's bundled 8x8 digits.

Run once by a maintainer (needs `pip install scikit-learn`, which tensorforge itself does not
depend on); the outputs are committed so the demo needs no training and no data download.
"""

from pathlib import Path

import keras
import numpy as np
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent


def main():
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]      # [N, 8, 8, 1] in [0, 1]
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]

    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.ReLU(max_value=6.0, name="relu6_2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(32, activation="relu", name="fc1")(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=25, batch_size=32, verbose=0)
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {acc:.3f} on {len(x_test)} held-out digits")
    model.save(HERE / "digits_cnn.keras")
    np.savez_compressed(HERE / "digits_test.npz", x=x_test, y=y_test)


if __name__ == "__main__":
    main()

"""3-D layers: MaxPooling3D / AveragePooling3D lift as two 2-D poolings (TFLite has no 3-D
pooling), exact with SAME padding on sizes the windows do not divide."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

import tensorforge  # noqa: E402

L = keras.layers


@pytest.mark.parametrize("layer", [L.MaxPooling3D, L.AveragePooling3D])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_3d_pooling_on_every_target(tmp_path, layer, padding):
    inputs = L.Input((5, 7, 6, 3), name="volume")
    out = layer(pool_size=(2, 3, 2), strides=(2, 2, 1), padding=padding, name="pool")(inputs)
    model = keras.Model(inputs, out)
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    assert result.verification.ok, result.verification.table()
    assert {r.runtime for r in result.verification.rows} == {"ir", "tflite", "savedmodel",
                                                              "tfjs"}


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv3d_and_its_transpose_on_every_target(tmp_path, padding):
    """Conv3D -> CONV_3D; Conv3DTranspose -> CONV_3D_TRANSPOSE in TFLite, and in TF/TF.js a
    stride-1 Conv3D over the stride-dilated input (TF.js has no Conv3DBackpropInputV2)."""
    keras.utils.set_random_seed(0)
    inputs = L.Input((4, 5, 6, 2), name="volume")
    h = L.Conv3D(3, (2, 3, 2), strides=(1, 2, 1), padding=padding, activation="relu",
                 name="conv")(inputs)
    out = L.Conv3DTranspose(2, (3, 2, 3), strides=(2, 1, 2), padding=padding,
                            name="up")(h)
    model = keras.Model(inputs, out)
    result = tensorforge.convert(model, target="all", output=tmp_path / "m", verify=True,
                                 progress=False)
    assert result.verification.ok, result.verification.table()
    ops = {n.op for n in result.module.main}
    assert {"conv3d", "conv3d_transpose"} <= ops

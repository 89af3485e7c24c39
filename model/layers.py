"""Custom Keras layers of the LSTM-ISTA network, written with ``keras.ops`` only.

They replace the ``Lambda`` and raw TensorFlow ops of the published model, so the network
serializes cleanly, trains under the JAX backend and exports under TensorFlow.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

PACKAGE = "caimx"


@keras.saving.register_keras_serializable(package=PACKAGE)
def keras2_hard_sigmoid(x: Any) -> Any:
    """Keras 2's ``hard_sigmoid``: ``clip(0.2 * x + 0.5, 0, 1)``.

    Keras 3's ``hard_sigmoid`` is ``relu6(x + 3) / 6``, a different function; the published
    ConvLSTM weights were trained with this one.
    """
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftThreshold(keras.layers.Layer):
    """ISTA shrinkage ``sign(x) * relu(|x| - theta)``, element-wise."""

    def __init__(self, theta: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.theta = float(theta)

    def call(self, x: Any) -> Any:
        return ops.sign(x) * ops.relu(ops.abs(x) - self.theta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "theta": self.theta}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameConv3D(keras.layers.Conv3D):
    """A Conv3D computed as one 2-D convolution over all ``B x T`` frames.

    A ``(1, k, k)`` kernel is a 2-D convolution of every frame. A ``(kt, k, k)`` kernel (odd
    ``kt``, ``same`` padding) first stacks each frame with its ``kt - 1`` neighbours in time
    along the channel axis (zeros beyond the ends, as ``same`` pads), so the same sum is one
    2-D convolution with ``kt x C`` input channels. Spatial dilation is kept.

    Same weights and, to float32 round-off, the same outputs as the Conv3D; on a GPU under
    XLA the 2-D form of the ISTA's ``(1, 3, 3)`` layers is faster (docs/benchmarks.md, "GPU").
    Keras names ``.weights.h5`` entries after the layer class, so a network built with it takes
    its weights from a Conv3D build by position (:func:`model.network.build_network`'s
    ``ista_convs`` and ``head_convs``), not from the file.
    """

    def __init__(self, filters: int, kernel_size: Any, **kwargs: Any) -> None:
        super().__init__(filters, kernel_size, **kwargs)
        kt = self.kernel_size[0]
        if (self.strides != (1, 1, 1) or self.dilation_rate[0] != 1 or kt % 2 == 0
                or (kt > 1 and self.padding != "same")):
            raise ValueError("FrameConv3D computes kernels of odd length in time (longer than 1 "
                             "only with 'same' padding) with unit strides and no dilation in "
                             f"time, got kernel {self.kernel_size}, strides {self.strides}, "
                             f"dilation {self.dilation_rate}, padding {self.padding!r}")

    def call(self, inputs: Any) -> Any:
        _, t, h, w, c = inputs.shape
        kt, kh, kw = self.kernel_size
        x, kernel = inputs, self.kernel[0]
        if kt > 1:
            half = kt // 2
            padded = ops.pad(inputs, [(0, 0), (half, half), (0, 0), (0, 0), (0, 0)])
            x = ops.concatenate([padded[:, i:i + t] for i in range(kt)], axis=-1)
            kernel = ops.reshape(ops.transpose(self.kernel, (1, 2, 0, 3, 4)),
                                 (kh, kw, kt * c, self.filters))
        x = ops.reshape(x, (-1, h, w, kt * c))
        y = ops.conv(x, kernel, padding=self.padding, dilation_rate=self.dilation_rate[1:])
        if self.use_bias:
            y = y + self.bias
        y = ops.reshape(y, (-1, t, y.shape[1], y.shape[2], self.filters))
        return self.activation(y) if self.activation is not None else y


@keras.saving.register_keras_serializable(package=PACKAGE)
class DataConsistency(keras.layers.Layer):
    """Gradient step towards the measurement: ``[y, x0] -> y - step * (y - x0)``."""

    def __init__(self, step: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = float(step)

    def call(self, inputs: list[Any]) -> Any:
        y, x0 = inputs
        return y - self.step * (y - x0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "step": self.step}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AbsTanh(keras.layers.Layer):
    """Sparse-code read-out ``tanh(|x|)``."""

    def call(self, x: Any) -> Any:
        return ops.tanh(ops.abs(x))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledChannelMean(keras.layers.Layer):
    """Mean over the last axis (kept, size 1) divided by ``divisor``.

    Used for the symmetry term: the block sum of ``G2(G1(c)) - a`` averaged over channels and
    divided by the number of ISTA blocks. ``(..., C) -> (..., 1)``.
    """

    def __init__(self, divisor: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.divisor = float(divisor)

    def call(self, x: Any) -> Any:
        return ops.mean(x, axis=-1, keepdims=True) / self.divisor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "divisor": self.divisor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropChannel(keras.layers.Layer):
    """Remove a trailing size-1 channel axis: ``(..., 1) -> (...)``."""

    def call(self, x: Any) -> Any:
        return ops.squeeze(x, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MorphologicalOpening(keras.layers.Layer):
    """Grey-scale opening of every channel with a flat ``size x size`` square.

    Erosion is a min-pool (``-maxpool(-x)``), dilation a max-pool, both stride 1 and ``same``
    padding (padded pixels never win), as ``tf.nn.erosion2d``/``dilation2d`` with a flat
    element. ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, size: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def _max_pool(self, x: Any) -> Any:
        return ops.max_pool(x, pool_size=self.size, strides=1, padding="same")

    def call(self, x: Any) -> Any:
        eroded = -self._max_pool(-x)
        return self._max_pool(eroded)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedTraces(keras.layers.Layer):
    """Per-channel weighted spatial mean per frame.

    Inputs ``[code (B, T, H, W, N), attention (B, T, H, W, 1), masks (B, H, W, N)]``; output
    ``mean_{h,w}(code * attention * mask)`` of shape ``(B, T, N)``.
    """

    def call(self, inputs: list[Any]) -> Any:
        code, attention, masks = inputs
        weighted = (code * attention) * ops.expand_dims(masks, axis=1)
        return ops.mean(weighted, axis=(2, 3))


@keras.saving.register_keras_serializable(package=PACKAGE)
class Transpose(keras.layers.Layer):
    """``ops.transpose`` with a fixed permutation that includes the batch axis."""

    def __init__(self, axes: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axes = tuple(int(a) for a in axes)

    def call(self, x: Any) -> Any:
        return ops.transpose(x, self.axes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axes": list(self.axes)}

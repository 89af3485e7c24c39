"""The LSTM-ISTA network (DeepCaImX): unrolled ISTA, ConvLSTM, segmentation head, traces.

Built with Keras layers and ``keras.ops`` only, so the same definition trains under the JAX
backend and exports as a TensorFlow SavedModel. Layer creation order and widths follow the
published model, so its weights load one to one (see :mod:`model.weights_import`).

Outputs of :func:`build_network` (a dict, batch axis first):

==============  ==================  ================================================
name            shape               meaning
==============  ==================  ================================================
denoised        (B, T, H, W)        background- and noise-free movie (block 5 output)
sparse          (B, T, H, W, N)     sparse code ``tanh(|s_5|)``
symmetry        (B, T, H, W)        symmetry-constraint term (training only)
attention       (B, T, H, W)        attention map per frame, in [0, 1)
raw_masks       (B, N, H, W)        footprints before the morphological opening
opened_masks    (B, N, H, W)        footprints after a 5x5 opening (zero: no neuron)
traces          (B, T - 4, N)       activity traces; frame i is input frame i + 2
==============  ==================  ================================================

Input scale: the published mini weights were trained, and their reference outputs computed, on
simulated movies fed as stored (background about 0.3-0.45, peak 1.0; not min-max scaled).
Min-max scaling those samples per patch moves the background to 0 and visibly degrades the
footprints (see docs/benchmarks.md, "Network").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import keras
from keras import layers

from model.layers import (
    AbsTanh,
    DataConsistency,
    DropChannel,
    FrameConv3D,
    MaskedTraces,
    MorphologicalOpening,
    ScaledChannelMean,
    SoftThreshold,
    Transpose,
    keras2_hard_sigmoid,
)

OUTPUT_NAMES: tuple[str, ...] = (
    "denoised",
    "sparse",
    "symmetry",
    "attention",
    "raw_masks",
    "opened_masks",
    "traces",
)
TRACE_OFFSET = 2  # output trace frame i is input frame i + TRACE_OFFSET
TRACE_LOSS = 2 * TRACE_OFFSET  # frames lost by the two valid k=3 convolutions


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes and constants of one network.

    ``T`` frames of ``H x W`` pixels in, at most ``N`` neurons out; ``dense_widths`` are the
    widths of the Dense layers over the time axis (the last one must equal ``N``).
    """

    T: int
    H: int
    W: int
    N: int
    dense_widths: tuple[int, ...]
    theta: float = 0.01
    ista_blocks: int = 5
    opening_size: int = 5
    lstm_kernel: int = 3

    def __post_init__(self) -> None:
        if self.dense_widths[-1] != self.N:
            raise ValueError(f"last dense width {self.dense_widths[-1]} must equal N={self.N}")
        if self.H % 16 or self.W % 16:
            raise ValueError(f"H and W must be multiples of 16, got {self.H}x{self.W}")
        if self.T <= TRACE_LOSS:
            raise ValueError(f"T must exceed {TRACE_LOSS}, got {self.T}")

    @property
    def trace_length(self) -> int:
        return self.T - TRACE_LOSS

    def with_(self, **changes: Any) -> NetworkConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


PRESETS: dict[str, NetworkConfig] = {
    "mini": NetworkConfig(T=100, H=32, W=32, N=4, dense_widths=(64, 32, 16, 8, 4)),
    "full": NetworkConfig(T=400, H=64, W=64, N=8, dense_widths=(128, 64, 32, 16, 8)),
}

ISTA_ROLES = ("analysis1", "analysis2", "analysis3", "synthesis1", "synthesis2", "output")
SEG_CONVS = (
    "enc1_conv1", "enc1_conv2", "enc1_conv3",
    "enc2_conv1", "enc2_conv2", "enc2_conv3",
    "enc3_conv1", "enc3_conv2", "enc3_conv3",
    "pyramid_pool", "pyramid_1x1", "pyramid_dil3", "pyramid_dil6", "pyramid_dil9",
    "dec_fuse", "dec_skip", "dec_conv1", "dec_conv2", "dec_conv3",
)  # fmt: skip
ATTENTION_CONV = "attention_conv"
LSTM_NAME = "convlstm"


def weighted_layer_names(config: NetworkConfig) -> dict[str, list[str]]:
    """Names of the layers with weights, per Keras class, in the published creation order."""
    ista = [f"ista{k}_{role}" for k in range(1, config.ista_blocks + 1) for role in ISTA_ROLES]
    return {
        "Conv3D": ista + list(SEG_CONVS) + [ATTENTION_CONV],
        "BatchNormalization": [f"{name}_bn" for name in SEG_CONVS],
        "ConvLSTM2D": [LSTM_NAME],
        "Dense": [f"footprint_dense{i}" for i in range(1, len(config.dense_widths) + 1)],
        "Conv1D": ["trace_conv1", "trace_conv2", "trace_conv3"],
    }


#: How a group of the network's convolutions is computed: ``conv3d`` (the published layers,
#: whose weights load from ``.weights.h5``) or ``frame2d`` (:class:`~model.layers.FrameConv3D`:
#: 2-D convolutions over all frames, time neighbours stacked as channels).
CONVS = ("conv3d", "frame2d")


def _ista(x0: Any, config: NetworkConfig, convs: str = "conv3d") -> tuple[Any, Any, Any]:
    """Unrolled ISTA. Returns (denoised, last thresholded code, symmetry sum), all 5-D."""

    def _ista_conv(name: str, filters: int, activation: str | None = None) -> layers.Conv3D:
        return _conv_class(convs)(filters, (1, 3, 3), padding="same", activation=activation,
                                  name=name)

    n = config.N
    x = x0
    y = code = None
    symmetry_terms = []
    for k in range(1, config.ista_blocks + 1):
        f1 = _ista_conv(f"ista{k}_analysis1", n)
        f2 = _ista_conv(f"ista{k}_analysis2", n, "relu")
        f3 = _ista_conv(f"ista{k}_analysis3", n)
        g1 = _ista_conv(f"ista{k}_synthesis1", n, "relu")
        g2 = _ista_conv(f"ista{k}_synthesis2", n)
        out = _ista_conv(f"ista{k}_output", 1)
        a = f1(x)
        c = f3(f2(a))
        code = SoftThreshold(config.theta, name=f"ista{k}_shrink")(c)
        o = out(g2(g1(code)))
        y = layers.Add(name=f"ista{k}_residual")([o, x])
        symmetry_terms.append(layers.Subtract(name=f"ista{k}_symmetry")([g2(g1(c)), a]))
        x = DataConsistency(config.theta, name=f"ista{k}_consistency")([y, x0])
    symmetry = layers.Add(name="symmetry_sum")(symmetry_terms)
    return y, code, symmetry


def _conv_class(convs: str) -> type[layers.Conv3D]:
    return FrameConv3D if convs == "frame2d" else layers.Conv3D


def _conv_bn_relu(x: Any, name: str, filters: int, kernel: tuple[int, int, int] = (3, 3, 3),
                  dilation: tuple[int, int, int] = (1, 1, 1), use_bias: bool = False,
                  convs: str = "conv3d") -> Any:
    x = _conv_class(convs)(filters, kernel, padding="same", dilation_rate=dilation,
                           use_bias=use_bias, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_group(x: Any, prefix: str, filters: int, convs: str) -> Any:
    first = _conv_bn_relu(x, f"{prefix}_conv1", filters, convs=convs)
    second = _conv_bn_relu(first, f"{prefix}_conv2", filters, convs=convs)
    third = _conv_bn_relu(second, f"{prefix}_conv3", filters, convs=convs)
    added = layers.Add(name=f"{prefix}_add")([third, first])
    return layers.ReLU(name=f"{prefix}_out")(added)


def _segmentation_head(x: Any, config: NetworkConfig, convs: str = "conv3d") -> Any:
    """ResNet-like encoder, dilated pyramid, decoder. ``(B,T,H,W,N) -> (B,T,H,W,1)``."""
    n = config.N
    enc1 = _residual_group(x, "enc1", 2 * n, convs)
    pooled = layers.MaxPooling3D((1, 2, 2), name="enc_maxpool")(enc1)
    enc2 = _residual_group(pooled, "enc2", 4 * n, convs)
    enc3 = _residual_group(enc2, "enc3", 4 * n, convs)
    low = layers.AveragePooling3D((1, 2, 2), name="enc_avgpool")(enc3)

    branch = layers.AveragePooling3D((1, 8, 8), name="pyramid_avgpool")(low)
    branch = _conv_bn_relu(branch, "pyramid_pool", 8 * n, (1, 1, 1), use_bias=True,
                           convs=convs)
    branch = layers.UpSampling3D((1, 8, 8), name="pyramid_upsample")(branch)
    pyramid = [
        branch,
        _conv_bn_relu(low, "pyramid_1x1", 8 * n, (1, 1, 1), convs=convs),
        _conv_bn_relu(low, "pyramid_dil3", 8 * n, dilation=(1, 3, 3), convs=convs),
        _conv_bn_relu(low, "pyramid_dil6", 8 * n, dilation=(1, 6, 6), convs=convs),
        _conv_bn_relu(low, "pyramid_dil9", 8 * n, dilation=(1, 9, 9), convs=convs),
    ]
    fused = layers.Concatenate(axis=-1, name="pyramid_concat")(pyramid)
    fused = _conv_bn_relu(fused, "dec_fuse", 8 * n, (1, 1, 1), convs=convs)
    fused = layers.UpSampling3D((1, 2, 2), name="dec_upsample1")(fused)
    skip = _conv_bn_relu(pooled, "dec_skip", 4 * n, (1, 1, 1), convs=convs)
    x = layers.Concatenate(axis=-1, name="dec_concat")([fused, skip])
    x = _conv_bn_relu(x, "dec_conv1", 4 * n, convs=convs)
    x = _conv_bn_relu(x, "dec_conv2", 2 * n, convs=convs)
    x = layers.UpSampling3D((1, 2, 2), name="dec_upsample2")(x)
    x = _conv_bn_relu(x, "dec_conv3", n, convs=convs)
    x = _conv_class(convs)(1, (1, 1, 1), activation="tanh", name=ATTENTION_CONV)(x)
    return layers.ReLU(name="attention_relu")(x)


def _footprints(attention: Any, config: NetworkConfig) -> Any:
    """Dense layers over time. ``(B,T,H,W,1) -> (B,H,W,N)`` raw masks in [0, 1)."""
    x = layers.Permute((2, 3, 4, 1), name="footprint_permute")(attention)
    widths = config.dense_widths
    for i, width in enumerate(widths, start=1):
        last = i == len(widths)
        x = layers.Dense(width, activation="tanh" if last else "relu", use_bias=False,
                         name=f"footprint_dense{i}")(x)
    x = layers.ReLU(name="footprint_relu")(x)
    return layers.Reshape((config.H, config.W, config.N), name="footprint_reshape")(x)


def _traces(code: Any, attention: Any, masks: Any, config: NetworkConfig) -> Any:
    """Masked spatial means, then three Conv1D over time. Output ``(B, T-4, N)``."""
    x = MaskedTraces(name="trace_pool")([code, attention, masks])
    x = layers.Conv1D(16, 3, activation="relu", use_bias=False, name="trace_conv1")(x)
    x = layers.Conv1D(8, 3, activation="relu", use_bias=False, name="trace_conv2")(x)
    return layers.Conv1D(config.N, 1, activation="relu", use_bias=False, name="trace_conv3")(x)


def build_network(config: NetworkConfig | str = "mini", *, ista_convs: str = "conv3d",
                  head_convs: str = "conv3d") -> keras.Model:
    """Build the network for ``config`` (a :class:`NetworkConfig` or a preset name).

    Input ``movie``: ``(B, T, H, W, 1)`` float32, min-max scaled to [0, 1] per patch.
    Outputs: a dict, see the module docstring. ``ista_convs``, ``head_convs``: how the ISTA's
    and the segmentation head's convolutions are computed, each one of :data:`CONVS`; a build
    with any ``frame2d`` has the same weights in the same order (``set_weights`` from a
    ``conv3d`` build) but cannot read a ``.weights.h5`` file itself.
    """
    if isinstance(config, str):
        config = PRESETS[config]
    for name, value in (("ista_convs", ista_convs), ("head_convs", head_convs)):
        if value not in CONVS:
            raise ValueError(f"{name} must be one of {CONVS}, got {value!r}")
    movie = keras.Input((config.T, config.H, config.W, 1), name="movie")
    denoised, code, symmetry = _ista(movie, config, ista_convs)
    sparse = AbsTanh(name="sparse_code")(code)
    symmetry = ScaledChannelMean(config.ista_blocks, name="symmetry_mean")(symmetry)

    recurrent = layers.ConvLSTM2D(
        config.N, config.lstm_kernel, padding="same", activation="tanh",
        recurrent_activation=keras2_hard_sigmoid, return_sequences=True, name=LSTM_NAME,
    )(sparse)
    attention = _segmentation_head(recurrent, config, head_convs)
    masks = _footprints(attention, config)
    opened = MorphologicalOpening(config.opening_size, name="opening")(masks)
    traces = _traces(sparse, attention, masks, config)

    outputs = {
        "denoised": DropChannel(name="denoised")(denoised),
        "sparse": layers.Identity(name="sparse")(sparse),
        "symmetry": DropChannel(name="symmetry")(symmetry),
        "attention": DropChannel(name="attention")(attention),
        "raw_masks": Transpose((0, 3, 1, 2), name="raw_masks")(masks),
        "opened_masks": Transpose((0, 3, 1, 2), name="opened_masks")(opened),
        "traces": layers.Identity(name="traces")(traces),
    }
    return keras.Model(movie, outputs, name="lstm_ista")


def count_parameters(model: keras.Model) -> int:
    """All weights, trainable or not (the BatchNormalization statistics count, as in Keras)."""
    return int(model.count_params())

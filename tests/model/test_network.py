"""The Keras network against the published DeepCaImX mini model and its ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from conftest_network import (
    PUBLISHED_H5,
    REFERENCE_KEYS,
    SAMPLES,
    assert_science,
    load_reference,
    load_sample,
    science,
)

from model import losses
from model.layers import FrameConv3D, MorphologicalOpening, keras2_hard_sigmoid
from model.network import PRESETS, NetworkConfig, build_network, count_parameters
from model.weights_import import WeightImportError, load_published_weights

MINI_PARAMETERS = 130_838
FULL_PARAMETERS = 543_462


@pytest.fixture(scope="module")
def published():
    """The mini network with the published weights and its outputs on the 3 reference inputs."""
    model = build_network("mini")
    load_published_weights(model, PUBLISHED_H5, PRESETS["mini"])
    inputs = np.stack([load_reference(k)["input"] for k in SAMPLES])[..., None]
    outputs = model.predict(inputs, batch_size=len(SAMPLES), verbose=0)
    return model, {key: np.asarray(value) for key, value in outputs.items()}


def test_parameter_counts():
    assert count_parameters(build_network("mini")) == MINI_PARAMETERS
    assert count_parameters(build_network("full")) == FULL_PARAMETERS


def test_output_shapes():
    model = build_network(PRESETS["mini"])
    shapes = {name: tuple(t.shape) for name, t in zip(model.output_names, model.outputs,
                                                      strict=True)}
    assert shapes == {
        "denoised": (None, 100, 32, 32),
        "sparse": (None, 100, 32, 32, 4),
        "symmetry": (None, 100, 32, 32),
        "attention": (None, 100, 32, 32),
        "raw_masks": (None, 4, 32, 32),
        "opened_masks": (None, 4, 32, 32),
        "traces": (None, 96, 4),
    }


@pytest.mark.parametrize(("kernel", "dilation", "padding"), [
    ((1, 3, 3), (1, 1, 1), "same"),     # the ISTA's layers
    ((3, 3, 3), (1, 1, 1), "same"),     # the segmentation head's
    ((3, 3, 3), (1, 3, 3), "same"),     # its dilated pyramid
    ((1, 1, 1), (1, 1, 1), "same"),
    ((5, 3, 3), (1, 2, 2), "same"),
    ((1, 3, 3), (1, 1, 1), "valid"),
])
def test_frame_conv_equals_conv3d(kernel, dilation, padding):
    """FrameConv3D (2-D convolutions over frames stacked with their time neighbours) computes
    the Conv3D of the same weights, first and last frames (zero-padded in time) included."""
    import keras

    x = np.random.default_rng(0).normal(size=(2, 6, 12, 12, 3)).astype(np.float32)
    conv = keras.layers.Conv3D(4, kernel, padding=padding, dilation_rate=dilation,
                               activation="relu")
    frame = FrameConv3D(4, kernel, padding=padding, dilation_rate=dilation, activation="relu")
    reference = np.asarray(conv(x))
    frame.build(x.shape)
    frame.set_weights(conv.get_weights())
    np.testing.assert_allclose(np.asarray(frame(x)), reference, atol=1e-5)


def test_frame_conv_refuses_what_it_cannot_compute():
    for kwargs in ({"kernel_size": (2, 3, 3), "padding": "same"},
                   {"kernel_size": (3, 3, 3), "padding": "valid"},
                   {"kernel_size": (3, 3, 3), "padding": "same", "dilation_rate": (2, 1, 1)},
                   {"kernel_size": (1, 3, 3), "strides": (1, 2, 2)}):
        with pytest.raises(ValueError, match="FrameConv3D computes kernels of odd length"):
            FrameConv3D(4, **kwargs)


def test_frame2d_build_has_the_same_weights():
    conv3d = build_network("mini")
    for kwargs in ({"ista_convs": "frame2d"}, {"head_convs": "frame2d"},
                   {"ista_convs": "frame2d", "head_convs": "frame2d"}):
        frame2d = build_network("mini", **kwargs)
        assert [w.shape for w in frame2d.get_weights()] == [w.shape for w in conv3d.get_weights()]
        assert count_parameters(frame2d) == MINI_PARAMETERS
    with pytest.raises(ValueError, match="ista_convs must be one of"):
        build_network("mini", ista_convs="fft")
    with pytest.raises(ValueError, match="head_convs must be one of"):
        build_network("mini", head_convs="fft")


def test_config_validation():
    with pytest.raises(ValueError, match="last dense width"):
        NetworkConfig(T=100, H=32, W=32, N=4, dense_widths=(64, 8))
    with pytest.raises(ValueError, match="multiples of 16"):
        NetworkConfig(T=100, H=30, W=32, N=4, dense_widths=(64, 4))


def test_keras2_hard_sigmoid():
    x = np.array([-5.0, -2.5, -1.0, 0.0, 1.0, 2.5, 5.0], dtype=np.float32)
    expected = np.clip(0.2 * x + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(np.asarray(keras2_hard_sigmoid(x)), expected, atol=1e-7)


def test_opening_matches_flat_grey_opening():
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32, 3)).astype(np.float32)
    ours = np.asarray(MorphologicalOpening(5)(x))
    expected = ndi.grey_opening(x, size=(1, 5, 5, 1), mode="nearest")
    np.testing.assert_allclose(ours, expected, atol=1e-7)


def test_wrong_preset_is_rejected_loudly():
    with pytest.raises(WeightImportError, match="shape"):
        load_published_weights(build_network("full"), PUBLISHED_H5, PRESETS["mini"])


def test_reference_input_is_the_stored_video():
    """The authors fed the simulated video exactly as stored in the .mat file (no rescaling)."""
    for k in SAMPLES:
        np.testing.assert_allclose(load_reference(k)["input"], load_sample(k).video, atol=1e-6)


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_matches_published_outputs(published, index):
    _, outputs = published
    reference = load_reference(SAMPLES[index])
    errors = {key: float(np.abs(outputs[key][index] - reference[key]).max())
              for key in REFERENCE_KEYS}
    assert max(errors.values()) < 1e-3, errors


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_science_against_ground_truth(published, index):
    _, outputs = published
    result = science(
        load_sample(SAMPLES[index]),
        outputs["denoised"][index],
        outputs["opened_masks"][index],
        outputs["traces"][index].T,
    )
    assert_science(result)


def test_published_losses_on_network_outputs(published):
    _, outputs = published
    samples = [load_sample(k) for k in SAMPLES]
    n = PRESETS["mini"].N
    masks = np.zeros((len(samples), n, 32, 32), np.float32)
    traces = np.zeros((len(samples), 100, n), np.float32)
    for b, s in enumerate(samples):
        masks[b, : len(s.masks)] = s.masks
        traces[b, :, : len(s.traces)] = s.traces.T
    targets = {
        "clean": np.stack([s.clean for s in samples]),
        "attention": np.asarray(losses.attention_target(masks, traces)),
        "masks": masks,
        "traces": traces,
    }
    values = {k: float(v) for k, v in losses.published_losses(targets, outputs).items()}
    expected_denoise = (
        np.sum((outputs["denoised"] - targets["clean"]) ** 2)
        + 0.01 * np.sum(outputs["symmetry"] ** 2)
    ) / 100
    assert values["denoise"] == pytest.approx(expected_denoise, rel=1e-4)
    # the published weights do much better than an all-zero answer (loss 10 for both terms)
    zeros = {key: np.zeros_like(value) for key, value in outputs.items()}
    blank = {k: float(v) for k, v in losses.published_losses(targets, zeros).items()}
    assert blank["segmentation"] == pytest.approx(10.0, abs=1e-3)
    assert blank["trace"] == pytest.approx(10.0, abs=1e-3)
    assert values["trace"] < 3.0
    assert 0 <= values["segmentation"] < 6.0
    assert values["total"] == pytest.approx(
        values["denoise"] + values["segmentation"] + values["trace"], rel=1e-6
    )


def test_loss_building_blocks():
    x = np.array([[0.0, 1.0, 2.0, 3.0]], np.float32)
    assert float(losses.pearson(x, 2 * x + 1)) == pytest.approx(1.0, abs=1e-6)
    assert float(losses.dice(x / 3, x / 3)) == pytest.approx(
        2 * np.sum((x / 3) ** 2) / np.sum(2 * x / 3), rel=1e-5
    )
    target = np.arange(10, dtype=np.float32).reshape(1, 10, 1)
    np.testing.assert_array_equal(np.asarray(losses.crop_target_traces(target))[0, :, 0],
                                  np.arange(2, 8))

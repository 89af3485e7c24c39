"""The Keras runner (model.keras_serving) against the SavedModel of the same shipped model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from small_movies import blinking_disk_movie

from caimx.settings import REPO_MODELS_DIR
from model.keras_serving import KerasPredictor, card_network, preferred_convs
from model.registry import ModelCard, ModelCardError
from model.runtimes import load_predictor

MODEL = REPO_MODELS_DIR / "caimx-mini"
pytestmark = pytest.mark.skipif(not (MODEL / "saved_model").is_dir(),
                                reason="the shipped caimx-mini is not installed")


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    """Five movie-range patches: background near 0.35 with a bright blinking disk."""
    rng = np.random.default_rng(4)
    t, h, w = 100, 32, 32
    yy, xx = np.mgrid[:h, :w]
    disk = ((yy - 16) ** 2 + (xx - 14) ** 2 <= 20).astype(np.float32)
    activity = np.convolve((rng.random(t) < 0.05).astype(np.float32), np.exp(-np.arange(20) / 5))
    clean = 0.35 + 0.5 * activity[:t, None, None] * disk
    return np.clip(clean[None] + rng.normal(0, 0.05, (5, t, h, w)), 0, 1).astype(np.float32)


def test_keras_runner_matches_the_saved_model(patches):
    saved = load_predictor(MODEL, "savedmodel").predict(patches)
    keras_out = load_predictor(MODEL, "keras", batch_size=4).predict(patches)  # 4 + 1 padded
    assert (saved.footprints > 0.5).any()  # a neuron found: the outputs compared are not empty
    for key in ("denoised", "attention", "traces", "raw_footprints", "footprints"):
        a, b = getattr(saved, key), getattr(keras_out, key)
        assert a.shape == b.shape and b.dtype == np.float32, key
        np.testing.assert_allclose(b, a, atol=1e-4, err_msg=key)


@pytest.mark.parametrize(("ista", "head"), [("frame2d", "conv3d"), ("conv3d", "frame2d"),
                                           ("frame2d", "frame2d")])
def test_per_frame_convolutions_give_the_same_outputs(patches, ista, head):
    """The per-frame forms of the ISTA's and the head's convolutions (``frame2d``) run the same
    weights to the same outputs; ``auto`` keeps the Conv3D layers under TensorFlow."""
    reference = KerasPredictor.load(MODEL, batch_size=8, ista_convs="conv3d",
                                    head_convs="conv3d").predict(patches)
    frame2d = KerasPredictor.load(MODEL, batch_size=8, ista_convs=ista,
                                  head_convs=head).predict(patches)
    assert (reference.footprints > 0.5).any()  # a neuron found
    for key in ("denoised", "attention", "traces", "footprints"):
        np.testing.assert_allclose(getattr(frame2d, key), getattr(reference, key), atol=1e-3,
                                   err_msg=key)
    assert preferred_convs() == {"ista": "conv3d", "head": "conv3d"}  # TensorFlow here


def test_padding_does_not_change_results(patches):
    predictor = KerasPredictor.load(MODEL, batch_size=8)
    whole = predictor.predict(patches)  # padded to 8
    one_by_one = [predictor.predict(patches[i:i + 1]) for i in range(len(patches))]
    assert (whole.footprints > 0.5).any() and whole.traces.any()  # a neuron found
    np.testing.assert_allclose(np.concatenate([o.traces for o in one_by_one]), whole.traces,
                               atol=1e-5)
    empty = predictor.predict(np.zeros((0, 100, 32, 32), np.float32))
    assert empty.traces.shape == (0, 4, 96) and empty.footprints.shape == (0, 4, 32, 32)
    with pytest.raises(ValueError, match=r"patches must have shape \(batch, 100, 32, 32\)"):
        predictor.predict(np.zeros((2, 50, 32, 32), np.float32))


def test_attention_summed_over_the_frames_asked_for(patches):
    """With frame weights the attention output is each patch's maps summed over the frames
    weighted 1 (the same numbers as summing those frames), padded batches included; weights of
    the wrong shape are refused; patches staged beforehand give the same outputs."""
    predictor = KerasPredictor.load(MODEL, batch_size=4)  # 4 + 1 padded
    weights = np.zeros((len(patches), 100), np.float32)
    weights[:, 12:90] = 1
    weights[3, :] = 0
    weights[3, 40:] = 1
    summed = predictor.predict(patches, attention_frames=weights)
    maps = predictor.predict(patches)
    assert summed.attention.shape == (len(patches), 32, 32)
    assert summed.attention.any() and maps.traces.any()  # the outputs compared are not empty
    expected = np.stack([m[w > 0].sum(axis=0) for m, w in zip(maps.attention, weights,
                                                                strict=True)])
    np.testing.assert_array_equal(summed.attention, expected)
    np.testing.assert_array_equal(summed.traces, maps.traces)
    with pytest.raises(ValueError, match=r"attention_frames must have shape \(5, 100\)"):
        predictor.predict(patches, attention_frames=weights[:, :50])
    staged = predictor.stage(patches, attention_frames=weights)  # checked, padded: 2 batches
    assert [n for n, _, _ in staged.parts] == [4, 1]
    again = predictor.start(staged, denoised=False)()
    np.testing.assert_array_equal(again.attention, summed.attention)
    np.testing.assert_array_equal(again.traces, maps.traces)
    assert again.denoised is None


def test_damaged_weights_are_refused(tmp_path):
    copy = tmp_path / "caimx-mini"
    shutil.copytree(MODEL, copy, ignore=shutil.ignore_patterns("saved_model"))
    with (copy / "model.weights.h5").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelCardError, match="does not match the card's weights_sha256"):
        KerasPredictor.load(copy)
    (copy / "model.weights.h5").unlink()
    with pytest.raises(FileNotFoundError, match="no Keras weights"):
        KerasPredictor.load(copy)


def test_card_network_follows_the_card():
    card = ModelCard.read(MODEL)
    assert card_network(card).T == 100
    longer = ModelCard.from_dict({**card.to_dict(), "T": 200})
    assert card_network(longer).T == 200  # the dense layers take any number of frames
    with pytest.raises(ModelCardError, match="preset 'huge'"):
        card_network(ModelCard.from_dict({**card.to_dict(), "preset": "huge"}))
    with pytest.raises(ModelCardError, match="6 neurons per patch"):
        card_network(ModelCard.from_dict({**card.to_dict(), "N": 6}))


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="unknown model runtime 'onnx'"):
        load_predictor(MODEL, "onnx")


def test_caimx_process_with_the_keras_runtime(tmp_path, capsys):
    """`caimx process --runtime keras` gives the neurons the SavedModel gives."""
    from caimx.cli import main
    from model.results import read_result

    blinking_disk_movie(tmp_path / "movie.npy")
    results = {}
    for runtime in ("savedmodel", "keras"):
        out = tmp_path / f"{runtime}.zarr"
        assert main(["process", str(tmp_path / "movie.npy"), "-o", str(out), "--models-dir",
                     str(REPO_MODELS_DIR), "--runtime", runtime, "--read-ahead", "2",
                     *(["--quiet"] if runtime == "keras" else [])]) == 0  # fmt: skip
        results[runtime] = read_result(out)
        printed = capsys.readouterr()
        assert "stages:" in printed.out
        # said before the run (whether a GPU was found), unless --quiet
        assert ("network: caimx-mini (TensorFlow " in printed.err) == (runtime == "savedmodel")
    a, b = results["savedmodel"], results["keras"]
    assert a.footprints.shape == b.footprints.shape and len(a.footprints) >= 1
    np.testing.assert_array_equal(a.footprints > 0, b.footprints > 0)
    np.testing.assert_allclose(b.traces, a.traces, rtol=1e-3, atol=1e-3)
    assert json.loads(json.dumps(b.attrs["parameters"]))["read_ahead"] == 2

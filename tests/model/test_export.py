"""SavedModel export, model card, registry, predictor and the shipped ``deepcaimx-mini``."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest_network import (
    LICENSE_FILE,
    PUBLISHED_H5,
    SAMPLES,
    assert_science,
    load_reference,
    load_sample,
    science,
)

from caimx.cli import main
from caimx.settings import REPO_MODELS_DIR
from model.export import sha256_file
from model.registry import ModelCard, UnknownModelError, list_models, resolve_model

NAME = "deepcaimx-mini"
TOLERANCE = 1e-3
ROUND_TRIP = 1e-4


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``caimx model export`` of the published weights into a fresh models folder."""
    models_dir = tmp_path_factory.mktemp("models")
    code = main([
        "model", "export", "--weights", str(PUBLISHED_H5), "--preset", "mini", "--name", NAME,
        "--models-dir", str(models_dir), "--license-file", str(LICENSE_FILE),
    ])
    assert code == 0
    return resolve_model(NAME, models_dir)


@pytest.fixture(scope="module")
def predictor(installed):
    from model.serving import SavedModelPredictor

    return SavedModelPredictor.load(installed.path)


@pytest.fixture(scope="module")
def keras_model(installed):
    from model.export import WEIGHTS_FILE
    from model.network import build_network

    model = build_network(installed.card.preset)
    model.load_weights(installed.path / WEIGHTS_FILE)
    return model


@pytest.fixture(scope="module")
def reference_inputs():
    return np.stack([load_reference(k)["input"] for k in SAMPLES])


@pytest.fixture(scope="module")
def served(predictor, reference_inputs):
    """SavedModel outputs for the three reference inputs in one batch of 3."""
    return predictor.predict(reference_inputs)


@pytest.fixture(scope="module")
def direct(keras_model, reference_inputs):
    """Keras outputs (compiled ``predict``) for the same batch, laid out as the contract."""
    out = keras_model.predict(reference_inputs[..., None], batch_size=len(SAMPLES), verbose=0)
    return {
        "denoised": np.asarray(out["denoised"]),
        "attention": np.asarray(out["attention"]),
        "footprints": np.asarray(out["opened_masks"]),
        "raw_footprints": np.asarray(out["raw_masks"]),
        "traces": np.transpose(np.asarray(out["traces"]), (0, 2, 1)),
    }


def test_card(installed):
    card = installed.card
    assert (card.name, card.preset, card.N) == (NAME, "mini", 4)
    assert card.patch_shape == (100, 32, 32)
    assert card.trace_offset == 2 and card.trace_length == 96
    assert card.input_scaling == "movie-range"  # the published weights' data: one dataset scale
    assert card.parameters == 130_838
    assert card.license == "MIT"
    assert card.weights_sha256 == sha256_file(installed.path / "model.weights.h5")
    assert (installed.path / LICENSE_FILE.name).read_text() == LICENSE_FILE.read_text()
    assert card.created and card.training_data and card.version


def test_export_refuses_to_overwrite(installed, capsys):
    code = main([
        "model", "export", "--weights", str(PUBLISHED_H5), "--name", NAME,
        "--models-dir", str(installed.path.parent),
    ])
    assert code == 2
    assert "exists" in capsys.readouterr().err


def test_signature(predictor):
    function = predictor._function
    inputs = function.structured_input_signature[1]
    assert list(inputs) == ["movie"]
    assert inputs["movie"].shape.as_list() == [None, 100, 32, 32, 1]
    outputs = {k: v.shape.as_list() for k, v in function.structured_outputs.items()}
    assert outputs == {
        "denoised": [None, 100, 32, 32],
        "attention": [None, 100, 32, 32],
        "footprints": [None, 4, 32, 32],
        "raw_footprints": [None, 4, 32, 32],
        "traces": [None, 4, 96],
    }


def test_compact_signature(predictor):
    assert predictor.has_compact_signature
    function = predictor._compact
    inputs = {k: v.shape.as_list() for k, v in function.structured_input_signature[1].items()}
    assert inputs == {"movie": [None, 100, 32, 32, 1], "attention_frames": [None, 100]}
    outputs = {k: v.shape.as_list() for k, v in function.structured_outputs.items()}
    assert outputs == {
        "attention": [None, 32, 32],
        "footprints": [None, 4, 32, 32],
        "raw_footprints": [None, 4, 32, 32],
        "traces": [None, 4, 96],
    }


def _owned_frames(n: int) -> np.ndarray:
    weights = np.zeros((n, 100), np.float32)
    weights[:, 10:90] = 1
    weights[-1, :] = 0  # one patch with other frames: the weights are per patch
    weights[-1, 3:40] = 1
    return weights


def test_compact_call_equals_the_default_one(predictor, served, reference_inputs):
    """Without the denoised movie and with frame weights the call goes through
    ``serving_compact``: the same footprints and traces, the attention maps' weighted sums."""
    weights = _owned_frames(len(reference_inputs))
    compact = predictor.start(reference_inputs, denoised=False, attention_frames=weights)()
    assert compact.denoised is None
    for key in ("footprints", "raw_footprints", "traces"):
        np.testing.assert_array_equal(getattr(compact, key), getattr(served, key))
    sums = (served.attention * weights[:, :, None, None]).sum(axis=1)
    assert compact.attention.shape == (3, 32, 32)
    np.testing.assert_allclose(compact.attention, sums, rtol=1e-5, atol=1e-4)
    # a shifted window of frames is not the same sum
    assert np.abs(compact.attention - served.attention[:, 11:91].sum(axis=1)).max() > 1e-2
    with pytest.raises(ValueError, match="attention_frames"):
        predictor.predict(reference_inputs, denoised=False, attention_frames=weights[:, :50])


def test_without_the_compact_signature(predictor, served, reference_inputs):
    """A SavedModel exported before ``serving_compact`` answers the same call from its default
    signature (dropping the denoised movie, summing on the host)."""
    from model.serving import SavedModelPredictor

    older = SavedModelPredictor(predictor.path, predictor.card, predictor._function,
                                predictor._keep_alive)
    assert not older.has_compact_signature
    weights = _owned_frames(len(reference_inputs))
    got = older.predict(reference_inputs, batch_size=2, denoised=False,
                        attention_frames=weights)
    assert got.denoised is None
    # calls of 2 patches, not 3: on some CPUs the kernels round differently per batch size
    np.testing.assert_allclose(got.traces, served.traces, rtol=1e-5, atol=1e-7)
    sums = (served.attention * weights[:, :, None, None]).sum(axis=1)
    np.testing.assert_allclose(got.attention, sums, rtol=1e-5, atol=1e-5)
    assert older.predict(reference_inputs[:0], denoised=False,
                         attention_frames=weights[:0]).attention.shape == (0, 32, 32)


def _export_default_signature_only(model_dir):
    from model.export import export_saved_model
    from model.keras_serving import card_network
    from model.network import build_network

    config = card_network(ModelCard.read(model_dir))
    model = build_network(config)
    model.load_weights(model_dir / "model.weights.h5")
    shutil.rmtree(model_dir / "saved_model")
    export_saved_model(model, config, model_dir / "saved_model", compact=False)


def test_refresh_rewrites_the_saved_model(installed, served, reference_inputs, tmp_path,
                                          capsys, caplog):
    """``caimx model refresh`` writes ``saved_model/`` again from the folder's weights: the same
    outputs; weights that do not match the card are refused and the old SavedModel stays."""
    from model.serving import SavedModelPredictor

    models = tmp_path / "models"
    copy = models / NAME
    shutil.copytree(installed.path, copy)
    _export_default_signature_only(copy)  # as exports made before serving_compact
    with caplog.at_level(logging.WARNING, logger="model.serving"):
        assert not SavedModelPredictor.load(copy).has_compact_signature
    assert f"caimx model refresh {NAME}" in caplog.text
    assert main(["model", "refresh", NAME, "--models-dir", str(models)]) == 0
    assert "refreshed" in capsys.readouterr().out
    refreshed = SavedModelPredictor.load(copy)
    assert refreshed.has_compact_signature
    np.testing.assert_allclose(refreshed.predict(reference_inputs).traces, served.traces,
                               atol=1e-6)
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        p.name for p in installed.path.iterdir())
    before = (copy / "saved_model" / "saved_model.pb").read_bytes()
    with (copy / "model.weights.h5").open("r+b") as handle:
        handle.seek(-64, 2)
        handle.write(b"\0" * 64)
    assert main(["model", "refresh", NAME, "--models-dir", str(models)]) == 2
    assert "weights_sha256" in capsys.readouterr().err
    assert (copy / "saved_model" / "saved_model.pb").read_bytes() == before
    assert main(["model", "refresh", "no-such-model", "--models-dir", str(models)]) == 2


def test_saved_model_matches_published(predictor, served):
    out = served
    for index, k in enumerate(SAMPLES):
        ref = load_reference(k)
        errors = {
            "denoised": np.abs(out.denoised[index] - ref["denoised"]).max(),
            "attention": np.abs(out.attention[index] - ref["attention"]).max(),
            "footprints": np.abs(out.footprints[index] - ref["opened_masks"]).max(),
            "raw_footprints": np.abs(out.raw_footprints[index] - ref["raw_masks"]).max(),
            "traces": np.abs(out.traces[index] - ref["traces"].T).max(),
        }
        assert max(errors.values()) < TOLERANCE, (k, errors)
        result = science(load_sample(k), out.denoised[index], out.footprints[index],
                         out.traces[index], offset=predictor.card.trace_offset)
        assert_science(result)


@pytest.mark.parametrize("batch", [1, 3])
def test_round_trip_equals_keras(predictor, served, direct, reference_inputs, batch):
    got_all = served if batch == 3 else predictor.predict(reference_inputs[:batch])
    for key, expected in direct.items():
        got = getattr(got_all, key)
        assert got.shape == (batch, *expected.shape[1:]), key
        assert np.abs(got - expected[:batch]).max() < ROUND_TRIP, key


def test_predict_splits_batches_and_checks_shape(predictor, served, reference_inputs):
    split = predictor.predict(reference_inputs, batch_size=2)
    for key in ("denoised", "footprints", "traces"):
        np.testing.assert_allclose(getattr(split, key), getattr(served, key), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        predictor.predict(np.zeros((1, 50, 32, 32), np.float32))


def test_predictor_needs_only_the_saved_model(installed, reference_inputs, tmp_path):
    """Load and run with the network code made unimportable, from a copy of the folder."""
    np.save(tmp_path / "x.npy", reference_inputs[2:3])
    script = textwrap.dedent(f"""
        import sys
        for name in ("model.network", "model.layers", "model.export", "model.weights_import"):
            sys.modules[name] = None
        import numpy as np
        from model.serving import SavedModelPredictor
        p = SavedModelPredictor.load({str(installed.path)!r})
        out = p.predict(np.load({str(tmp_path / "x.npy")!r}))
        print(out.traces.shape, out.footprints.shape, "keras" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(1, 4, 96) (1, 4, 32, 32)" in result.stdout


def test_registry(installed, tmp_path):
    cards = list_models(installed.path.parent)
    assert [c.name for c in cards] == [NAME]
    with pytest.raises(UnknownModelError, match=NAME) as info:
        resolve_model("no-such-model", installed.path.parent)
    assert isinstance(info.value, LookupError)
    with pytest.raises(UnknownModelError, match="installed: none"):
        resolve_model(NAME, tmp_path)
    with pytest.raises(UnknownModelError):
        resolve_model("../" + NAME, installed.path.parent / "sub")


def test_registry_imports_no_tensorflow():
    script = ("import sys, model.registry; "
              "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'jax')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "False"


def test_models_command(installed, capsys):
    assert main(["models", "--models-dir", str(installed.path.parent)]) == 0
    assert NAME in capsys.readouterr().out
    assert main(["model", "list", "--json", "--models-dir", str(installed.path.parent)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["parameters"] == 130_838


def test_shipped_model(reference_inputs):
    """The repository's ``model/zoo/deepcaimx-mini`` is the converted published model."""
    from model.serving import SavedModelPredictor

    shipped = resolve_model(NAME, REPO_MODELS_DIR)
    size = sum(p.stat().st_size for p in shipped.path.rglob("*") if p.is_file())
    assert size < 5 * 1024**2
    assert (shipped.path / LICENSE_FILE.name).is_file()
    assert shipped.card.weights_sha256 == sha256_file(shipped.path / "model.weights.h5")
    card = ModelCard.read(shipped.path)
    assert card == shipped.card and card.parameters == 130_838
    out = SavedModelPredictor.load(shipped.path).predict(reference_inputs[2:3])
    ref = load_reference(SAMPLES[2])
    assert np.abs(out.traces[0] - ref["traces"].T).max() < TOLERANCE
    assert np.abs(out.footprints[0] - ref["opened_masks"]).max() < TOLERANCE


def test_shipped_default_model_matches_its_weights(reference_inputs):
    """``model/zoo/caimx-mini`` (the default): its card names the weights it holds, its
    SavedModel computes what those weights compute in Keras, and it is not the published model."""
    from caimx.settings import Settings
    from model.network import build_network
    from model.serving import SavedModelPredictor

    assert Settings().default_model == "caimx-mini"
    shipped = resolve_model("caimx-mini", REPO_MODELS_DIR)
    assert shipped.card.input_scaling == "movie-range" and shipped.card.metrics
    assert shipped.card.weights_sha256 == sha256_file(shipped.path / "model.weights.h5")
    assert (shipped.path / LICENSE_FILE.name).is_file()
    saved = SavedModelPredictor.load(shipped.path).predict(reference_inputs[2:3])
    keras_model = build_network(shipped.card.preset)
    keras_model.load_weights(shipped.path / "model.weights.h5")
    direct = keras_model.predict(reference_inputs[2:3][..., None], verbose=0)
    assert np.abs(saved.footprints - np.asarray(direct["opened_masks"])).max() < TOLERANCE
    assert np.abs(saved.traces - np.transpose(np.asarray(direct["traces"]), (0, 2, 1))
                  ).max() < TOLERANCE
    published = SavedModelPredictor.load(REPO_MODELS_DIR / NAME).predict(reference_inputs[2:3])
    assert np.abs(saved.traces - published.traces).max() > 1e-3  # fine-tuned, not a copy

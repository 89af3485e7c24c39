"""``caimx process`` on a GPU chooses batch size and threads for it, unless the user did."""

from __future__ import annotations

import argparse

import pytest

from caimx.cli import process_cmd
from caimx.settings import Settings
from model.inference.params import InferenceParams
from model.runtimes import accelerator, accelerator_defaults


def test_no_accelerator_on_this_cpu() -> None:
    assert accelerator("savedmodel") is None
    assert accelerator("no-such-runtime") is None


def test_defaults_follow_the_cores() -> None:
    assert accelerator_defaults("keras", 16) == {"batch_size": 256, "read_ahead": 12,
                                                 "candidate_threads": 4}  # as measured
    assert accelerator_defaults("savedmodel", 8) == {"batch_size": 128, "read_ahead": 4,
                                                     "candidate_threads": 2}
    assert accelerator_defaults("keras", 2) == {"batch_size": 256, "read_ahead": 2,
                                                "candidate_threads": 1}


def _args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"batch_size": None, "read_ahead": None,
                                 "candidate_threads": None, "quiet": False, **given})


def test_chosen_on_a_gpu_unless_given(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    import model.runtimes

    params = InferenceParams()
    settings = Settings()
    # on this CPU nothing changes
    assert process_cmd._on_accelerator(params, _args(), settings, "savedmodel") == params
    assert capsys.readouterr().err == ""

    monkeypatch.setattr(model.runtimes, "accelerator", lambda runtime: "GPU")
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    tuned = process_cmd._on_accelerator(params, _args(), settings, "keras")
    assert (tuned.batch_size, tuned.read_ahead, tuned.candidate_threads) == (256, 12, 4)
    said = capsys.readouterr().err
    assert "GPU found: batch-size 256, read-ahead 12, candidate-threads 4" in said
    # a flag or a CAIMX_* setting wins
    monkeypatch.setenv("CAIMX_READ_AHEAD", "3")
    given = process_cmd._on_accelerator(params, _args(batch_size=64), Settings(), "keras")
    assert (given.batch_size, given.read_ahead, given.candidate_threads) == (
        params.batch_size, params.read_ahead, 4)
    assert "GPU found: candidate-threads 4 " in capsys.readouterr().err

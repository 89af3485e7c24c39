"""docs/parameters.md is generated from the parameter dataclasses and must match them."""

from pathlib import Path

from model.inference.params_doc import parameters_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "parameters.md"


def test_parameters_page_matches_the_code() -> None:
    assert DOC.read_text() == parameters_markdown(), (
        "docs/parameters.md is stale: python -m model.inference.params_doc > docs/parameters.md"
    )

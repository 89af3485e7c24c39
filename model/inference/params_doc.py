"""Render the inference parameters as the Markdown table in ``docs/parameters.md``.

The page is generated from the dataclasses, so it cannot drift from the code: a test compares it
with this output. Regenerate with ``python -m model.inference.params_doc > docs/parameters.md``.
"""

from __future__ import annotations

from model.inference.params import describe

HEADER = """# Inference parameters

Every parameter of the full-field engine (used by `caimx process` and by the workers), generated
from `model/inference/params.py`; dotted names are nested stages. The jobs API exposes a
subset (model, frame rate, pixel size, tiles, overlaps, motion correction, binning and
rescaling, outputs).

| name | default | bounds | description |
|---|---|---|---|
"""


def _bounds(bounds: tuple | None) -> str:
    if not bounds or bounds == (None, None):
        return ""
    low, high = bounds
    return f"{'' if low is None else low} .. {'' if high is None else high}"


def parameters_markdown() -> str:
    """The whole page as text."""
    rows = [
        f"| `{row['name']}` | `{row['default']!r}` | {_bounds(row['bounds'])} | "
        f"{row['description']} |"
        for row in describe()
    ]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(parameters_markdown(), end="")

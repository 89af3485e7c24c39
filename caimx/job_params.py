"""What a client may ask of a job, validated once by the API and turned into engine overrides.

Shared by the service (validation, OpenAPI) and the worker (``engine_overrides``), so the two agree
on names and bounds without the service importing the inference engine. The bounds repeat those of
``model.inference.params.PlanParams``; a test keeps them equal.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Output = Literal["footprints", "traces", "images", "denoised"]
DEFAULT_OUTPUTS: tuple[Output, ...] = ("footprints", "traces", "images")


class JobParams(BaseModel):
    """Processing parameters of one job; everything is optional."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"model": "deepcaimx-mini", "fps": 30.0, "pixel_size_um": 1.2, "tile": 32,
                 "tile_overlap": 8, "motion_correction": True,
                 "outputs": ["footprints", "traces", "images"]}
            ]
        },
    )

    model: str | None = Field(default=None, description="Installed model; default: the service's.")
    fps: float | None = Field(
        default=None, gt=0, le=10_000,
        description="Frame rate (Hz) when the file records none; recorded with the result.",
    )  # fmt: skip
    pixel_size_um: float | None = Field(
        default=None, gt=0, le=1000,
        description="Pixel edge in micrometres; recorded with the result.",
    )  # fmt: skip
    tile: int | None = Field(default=None, ge=8, le=4096,
                             description="Spatial tile edge in pixels; default: the model's patch.")
    tile_overlap: int | None = Field(default=None, ge=0, le=2048,
                                     description="Pixels shared by neighbouring tiles.")
    window_overlap: int | None = Field(default=None, ge=4, le=10_000,
                                       description="Frames shared by neighbouring windows.")
    shifted_tiling: bool = Field(
        default=False,
        description="Also run the network on a second grid of tiles half a stride off: every cell "
                    "is seen whole by some tile (recall +0.02-0.03 on simulated movies, about "
                    "1.8x the network time).",
    )  # fmt: skip
    motion_correction: bool = Field(default=True, description="Correct rigid motion first.")
    temporal_bin: int | None = Field(
        default=None, ge=1, le=1000,
        description="Average this many consecutive frames before the network; traces still "
                    "have one value per frame.",
    )  # fmt: skip
    match_frame_rate: bool = Field(
        default=False, description="Bin frames to the model's frame rate (needs the movie's fps).")
    spatial_scale: float | None = Field(
        default=None, ge=0.05, le=20,
        description="Resize frames by this factor before the network; footprints come back at "
                    "the movie's resolution.",
    )  # fmt: skip
    soma_diameter_px: float | None = Field(
        default=None, ge=1, le=1000,
        description="Typical soma diameter in pixels; default: estimated from the movie. Frames "
                    "are resized so somata have the model's trained size.",
    )  # fmt: skip
    rescale: bool = Field(
        default=False,
        description="Resize frames so somata have the model's trained size (needs pixel_size_um).")
    neuron_diameter_um: float | None = Field(
        default=None, gt=0, le=1000,
        description="Typical soma diameter in micrometres (for rescale); default: the model's.",
    )  # fmt: skip
    outputs: list[Output] = Field(
        default_factory=lambda: list(DEFAULT_OUTPUTS),
        description="Arrays written to the result; `denoised` adds the (T, H, W) denoised movie.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> JobParams:
        tile, overlap = self.tile, self.tile_overlap
        if tile is not None and overlap is not None and overlap >= tile:
            raise ValueError("tile_overlap must be smaller than tile")
        if self.rescale and (self.spatial_scale is not None or self.pixel_size_um is None):
            raise ValueError("rescale needs pixel_size_um and excludes spatial_scale")
        if self.soma_diameter_px is not None and (self.rescale or self.spatial_scale is not None):
            raise ValueError("give soma_diameter_px, spatial_scale or rescale, not two of them")
        return self


class MovieOptions(BaseModel):
    """How to read the movie; passed to ``model.io.open_movie``."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(
        default=None, max_length=500,
        description="HDF5 dataset path, NWB TwoPhotonSeries name, or Zarr array in a group.",
    )  # fmt: skip
    channel: int | None = Field(
        default=None, ge=0, le=64,
        description="Channel of a hyperstack, ScanImage or Scanbox file, from 0 (needed when the "
                    "file saved several).",
    )  # fmt: skip
    plane: int | None = Field(
        default=None, ge=0, le=1024,
        description="Z-plane of a ScanImage fast-z recording or a hyperstack, from 0 (default 0; "
                    "the job's `movie.planes` says how many there are).",
    )  # fmt: skip


def engine_overrides(params: JobParams) -> dict[str, Any]:
    """The ``InferenceParams.from_dict`` overrides these job parameters stand for."""
    plan = {key: value for key in ("tile", "tile_overlap", "window_overlap")
            if (value := getattr(params, key)) is not None}  # fmt: skip
    out: dict[str, Any] = {"motion": {"enabled": params.motion_correction},
                           "write_denoised": "denoised" in params.outputs}  # fmt: skip
    if params.shifted_tiling:
        plan["shifted_tiling"] = True
    if plan:
        out["plan"] = plan
    resample = {key: value for key in ("temporal_bin", "spatial_scale", "pixel_size_um",
                                       "neuron_diameter_um", "match_frame_rate", "rescale",
                                       "soma_diameter_px")
                if (value := getattr(params, key)) not in (None, False)}  # fmt: skip
    if resample:
        out["resample"] = resample
    return out

"""Parameters of the inference engine: frozen dataclasses per stage, with descriptions and bounds.

Every field carries ``metadata={"description": ..., "bounds": (low, high)}``; the bounds are checked
when an object is built, so a bad value fails early with a message naming the field. Use
:func:`describe` to list them (for ``docs/parameters.md`` or a ``--help`` text) and
:func:`InferenceParams.from_dict` / :meth:`InferenceParams.to_dict` for a JSON round trip.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


def _p(default: Any, description: str, low: float | None = None, high: float | None = None) -> Any:
    return field(default=default, metadata={"description": description, "bounds": (low, high)})


def _check_bounds(obj: Any) -> None:
    for f in dataclasses.fields(obj):
        if dataclasses.is_dataclass(f.type) or f.name.startswith("_"):
            continue
        value = getattr(obj, f.name)
        low, high = f.metadata.get("bounds", (None, None))
        if value is None or isinstance(value, (bool, str)) or dataclasses.is_dataclass(value):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{type(obj).__name__}.{f.name} must be finite, got {value}")
        if low is not None and value < low:
            raise ValueError(f"{type(obj).__name__}.{f.name} must be >= {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"{type(obj).__name__}.{f.name} must be <= {high}, got {value}")


@dataclass(frozen=True)
class ScalingParams:
    """Intensity scaling: a robust per-movie range, then the model's ``input_scaling``.

    The model card's ``input_scaling`` picks what the network sees (see
    :mod:`model.inference.scaling`): ``"movie-range"`` maps the movie's low/high percentiles to
    ``background_level``/``peak_level`` (one affine map for the whole movie, as the published
    weights' data were scaled over the whole dataset); ``"minmax-per-patch"`` min-max scales each
    patch with the floor ``min_patch_range`` (the project's own training code).
    """

    sample_frames: int = _p(200, "Frames (evenly spaced) sampled for the movie percentiles.",
                            1, 10_000)
    low_percentile: float = _p(1.0, "Movie percentile mapped to 0 before patch scaling.", 0.0, 50.0)
    high_percentile: float = _p(99.9, "Movie percentile mapped to 1; brighter pixels are clipped.",
                                50.0, 100.0)
    spatial_sigma: float = _p(
        1.0,
        "Gaussian smoothing (pixels) of each frame before the network; the published weights were "
        "trained on far cleaner patches than real movies, and this lowers the per-pixel noise.",
        0.0, 10.0,
    )
    min_patch_range: float = _p(
        0.25,
        "Floor on a patch's min-max range, as a fraction of the movie range: a patch with only "
        "background is not stretched to [0, 1], which keeps noise from looking like cells.",
        0.0, 1.0,
    )
    background_level: float = _p(
        0.35,
        "Movie-range input scaling: network input level of the movie's low percentile (the "
        "published mini weights' data put the background at about 0.3-0.45).",
        0.0, 1.0,
    )
    peak_level: float = _p(
        1.0,
        "Movie-range input scaling: network input level of the movie's high percentile (the "
        "brightest transients of the published data reach 1.0).",
        0.0, 1.0,
    )

    def __post_init__(self) -> None:
        _check_bounds(self)
        if self.low_percentile >= self.high_percentile:
            raise ValueError("ScalingParams.low_percentile must be below high_percentile")
        if self.background_level >= self.peak_level:
            raise ValueError("ScalingParams.background_level must be below peak_level")


@dataclass(frozen=True)
class MotionParams:
    """Rigid motion correction by phase correlation against a reference image."""

    enabled: bool = _p(True, "Correct rigid motion; turn off for already registered movies.")
    reference_frames: int = _p(100, "Frames (evenly spaced) averaged into the reference.", 1, 5000)
    max_shift: int = _p(15, "Largest accepted shift in pixels; larger estimates are clipped.",
                        0, 256)
    min_size: int = _p(
        64, "Smallest frame edge (pixels, as the network sees the frames) that is corrected: a "
        "field of one or two cells has no landmark besides the cells, whose activity drags the "
        "estimate (the published 32 x 32 samples, which do not move, had 11 and 18 of 100 "
        "frames moved by 1-2 pixels).", 1, 4096)
    upsample: int = _p(1, "Sub-pixel factor of the phase correlation (1: whole pixels).", 1, 100)
    reestimate_binned: bool = _p(
        False, "With temporal binning, estimate every movie frame's motion again for the "
        "fluorescence pass (True) instead of moving each frame by its bin's shift, as the "
        "network's input was moved (False): a second pass of estimation over every frame, more "
        "exact under fast motion (docs/performance.md).")

    def __post_init__(self) -> None:
        _check_bounds(self)


@dataclass(frozen=True)
class PlanParams:
    """How the movie is cut into tiles, windows and chunks."""

    tile: int | None = _p(None, "Tile edge in pixels; None: the model's patch size.", 8, 4096)
    tile_overlap: int = _p(4, "Pixels shared by neighbouring tiles.", 0, 2048)
    shifted_tiling: bool = _p(
        False, "Also run the network on a second grid of tiles shifted by half a tile stride, so "
        "every cell is seen whole, well inside some tile (about 1.8x the network's work).")
    window_overlap: int = _p(20, "Frames shared by neighbouring windows (>= 4 covers the trim).",
                             4, 10_000)
    tiles_per_chunk: int | None = _p(None, "Tiles in one chunk; None: every tile of a window.", 1,
                                     1_000_000)
    min_frames: int = _p(16, "Shortest accepted movie (shorter movies are refused).", 1, 10_000)
    min_size: int = _p(8, "Smallest accepted frame edge in pixels.", 1, 4096)

    def __post_init__(self) -> None:
        _check_bounds(self)


@dataclass(frozen=True)
class DecideParams:
    """Which network channels become neurons. Every threshold is explicit."""

    mask_threshold: float = _p(0.5, "Opened-mask value above which a pixel belongs to a channel.",
                               0.0, 1.0)
    min_area: int = _p(
        26, "Smallest footprint (pixels, on the network's grid) kept, per neuron and per split "
        "or refined piece: more than one 5 x 5 square, the smallest shape the network's opening "
        "of its masks lets through (its weakest detections; square fragments on real movies).",
        0, 100_000)
    min_window_fraction: float = _p(
        0.1,
        "Share of the movie's temporal windows in which a neuron must be detected (rounded up; "
        "never fewer than one). False detections are independent from window to window and "
        "rarely recur, while a soma recurs in most windows; without this rule they add up with "
        "the movie's length (docs/decision-rules.md). 0 turns it off.",
        0.0, 1.0,
    )
    min_contrast: float | None = _p(
        0.0,
        "Soma contrast a neuron needs in the mean image: (mean over its footprint - 90th "
        "percentile of a ring 2-10 pixels around it) / |that percentile|. A soma is brighter than "
        "the neuropil around it; the network's false detections along blood vessels (a bright "
        "strip of neuropil beside a dark vessel) are not brighter than the other side of their "
        "ring (docs/decision-rules.md). Each piece of a split footprint (split_distance) must "
        "pass it too, measured with its sibling pieces left out of its ring. Applies when the "
        "mean image shows somata (a soma size was estimated or given). None turns the rule off.",
        -1.0, 100.0,
    )
    bright_neighbour_contrast: float | None = _p(
        0.1,
        "A neuron that failed min_contrast is measured again with the pixels of the kept neurons "
        "whose contrast reaches this value (clear somata) left out of its ring, and kept if it "
        "passes then: in dense fields a cell's ring holds its bright neighbours, which are not "
        "neuropil (docs/decision-rules.md). None: every ring keeps all its pixels.",
        -1.0, 100.0,
    )
    refine_level: float | None = _p(
        0.3,
        "Footprints are cut to the soma in the mean image: the pixels brighter than ring + "
        "refine_level x (peak - ring), ring being the reference of min_contrast and peak the "
        "footprint's 95th percentile; each separate part becomes its own neuron (the network "
        "often puts two touching cells, or a cell and its neuropil, in one footprint). Footprints "
        "not brighter than their ring stay as they are. None keeps the network's footprints.",
        0.0, 1.0,
    )
    refine_above: float = _p(
        1.3,
        "Only footprints (or split pieces) larger than this many times the median area of the "
        "movie's neurons (5 or more) are refined: a footprint of a soma's size is the network's "
        "outline of that soma, which the mean image (uneven across a cell, or smooth where the "
        "cell is dim) would cut worse. With fewer than 5 neurons none is refined.",
        0.0, 100.0,
    )
    grow_below: float | None = _p(
        0.6,
        "After refining, a footprint smaller than this fraction of the median area of the "
        "movie's neurons (5 or more) is grown to the soma the mean image shows around it: the "
        "pixels brighter than ring median + grow_level x (footprint peak - ring median), "
        "connected to it, within 1.6 typical radii of its centre, outside other neurons, up to "
        "1.6 typical areas (the network often outlines only the bright core of a dim cell: a "
        "false detection and a miss at once). Needs refine_level. None: no growing.",
        0.0, 1.0,
    )
    grow_level: float = _p(
        0.5, "Brightness level of a grown footprint's edge between its ring and its peak "
        "(grow_below).", 0.0, 1.0,
    )
    split_distance: float | None = _p(
        4.0,
        "Before refining, a network footprint whose shape has two or more centres at least this "
        "many pixels apart (peaks of its distance to the edge, each at least half this deep) is "
        "split between them by a watershed: two or three touching somata in one footprint (the "
        "commonest miss). None: no split.",
        1.0, 100.0,
    )
    dark_soma_evidence: float | None = _p(
        0.6,
        "Response (in units of the mean image's local spread) at which a disc of the movie's "
        "soma size darker than the neuropil around it, and not covered by a network neuron, is "
        "a neuron too (model.inference.anatomy: silent somata in bright neuropil, which the "
        "network does not see). None: only the network's neurons.",
        0.0, 100.0,
    )
    def __post_init__(self) -> None:
        _check_bounds(self)


@dataclass(frozen=True)
class StitchParams:
    """How candidates from overlapping tiles and windows become one neuron."""

    merge_iou: float = _p(
        0.3, "IoU at which two tiles' footprints (same window), compared inside the part of the "
        "frame both tiles see, are one neuron.", 0.0, 1.0)
    link_iou: float = _p(0.3, "IoU at which footprints of different windows are one neuron.",
                         0.0, 1.0)
    drop_fragments: bool = _p(
        True, "A window neuron seen by one tile only, and there cut by the tile's border (an "
        "interior one), is the part of a cell the neighbouring tile did not confirm: it is "
        "dropped rather than kept with a footprint bounded by the tile's edge.")

    def __post_init__(self) -> None:
        _check_bounds(self)


@dataclass(frozen=True)
class ResampleParams:
    """Temporal binning and spatial rescaling of the movie before the network.

    The network sees the binned, rescaled movie; the result comes back on the movie's own frames
    and pixel grid (``docs/results.md``, "Binning and rescaling"). Model-card values that the
    derived options use: ``frame_rate_hz``, ``pixel_size_um``, ``neuron_diameter_um``.
    """

    temporal_bin: int | None = _p(
        None, "Consecutive frames averaged into one network frame; traces are interpolated back "
        "to every movie frame. None: round(movie fps / model card frame_rate_hz), at least 1, "
        "when both rates are known (the movie's from its file's metadata or the job), else 1.",
        1, 1000)
    match_frame_rate: bool = _p(
        False, "Insist on the bin from the frame rates (an error when the movie's or the model's "
        "is unknown) instead of falling back to no binning.")
    spatial_scale: float | None = _p(
        None, "Resize factor of every frame before the network (0.5 halves it); footprints and "
        "images come back at the movie's resolution. None: so that the movie's somata (its "
        "soma_diameter_px, else rescale's micrometres, else the diameter estimated from its mean "
        "image) have the size the model was trained on; an estimate within 20 % of that size "
        "leaves the frames as they are, and an estimate under it does not enlarge them "
        "(enlarging lowered F1 on a real recording; give soma_diameter_px to). 1: no resizing.",
        0.05, 20.0)
    soma_diameter_px: float | None = _p(
        None, "Typical soma diameter in this movie, pixels. None: estimated from the movie's mean "
        "image (model.inference.somasize), when its frames are at least 64 pixels.", 1.0, 1000.0)
    rescale: bool = _p(
        False, "Derive spatial_scale from micrometres: (model neuron_diameter_um / model "
        "pixel_size_um) / (neuron_diameter_um / pixel_size_um). Needs the movie's pixel_size_um "
        "and a model card with both values.")
    pixel_size_um: float | None = _p(
        None, "The movie's pixel edge in micrometres (for rescale).", 1e-6, 1000.0)
    neuron_diameter_um: float | None = _p(
        None, "Typical soma diameter in this movie, micrometres (for rescale); None: the model "
        "card's.", 1e-6, 1000.0)

    def __post_init__(self) -> None:
        _check_bounds(self)
        if self.rescale and self.spatial_scale is not None:
            raise ValueError("ResampleParams: give spatial_scale or rescale, not both")
        if self.soma_diameter_px is not None and (self.rescale or self.spatial_scale is not None):
            raise ValueError("ResampleParams: give soma_diameter_px, spatial_scale or rescale, "
                             "not two of them")


@dataclass(frozen=True)
class ImageParams:
    """The summary images besides the mean and the maximum (``docs/results.md``)."""

    correlation_bin: int = _p(
        4, "Frames (on the network's time axis) averaged into one sample of the correlation "
        "image: photon noise shrinks, transients lasting several frames stay.", 1, 1000)
    correlation_size: int = _p(
        5, "Edge in pixels of the neighbourhood each pixel is correlated with (odd; the pixel "
        "itself left out).", 3, 63)

    def __post_init__(self) -> None:
        _check_bounds(self)
        if self.correlation_size % 2 == 0:
            raise ValueError("ImageParams.correlation_size must be odd, got "
                             f"{self.correlation_size}")


#: Parameters of earlier versions, removed because the rules they set did not earn their place
#: (docs/decision-rules.md): accepted in stored plans and job parameters, and ignored.
RETIRED: dict[str, frozenset[str]] = {
    "decide": frozenset({"max_area", "min_tile_evidence", "edge_margin", "min_windows",
                         "active_snr", "snr_neuropil_coefficient", "min_snr"}),
    "stitch": frozenset({"merge_containment", "same_patch_iou", "same_patch_containment"}),
}


@dataclass(frozen=True)
class InferenceParams:
    """All parameters of :func:`model.inference.process_movie`."""

    scaling: ScalingParams = field(default_factory=ScalingParams)
    motion: MotionParams = field(default_factory=MotionParams)
    plan: PlanParams = field(default_factory=PlanParams)
    decide: DecideParams = field(default_factory=DecideParams)
    stitch: StitchParams = field(default_factory=StitchParams)
    resample: ResampleParams = field(default_factory=ResampleParams)
    images: ImageParams = field(default_factory=ImageParams)
    batch_size: int = _p(16, "Patches per network call.", 1, 65_536)
    write_denoised: bool = _p(False, "Also store the denoised movie (T, H, W) in the result.")
    read_ahead: int = _p(1, "Chunks read and motion-corrected in threads while the network runs "
                            "(a GPU needs several; each holds one chunk of patches in memory).",
                         0, 64)
    candidate_threads: int = _p(
        1, "Threads that turn the network's outputs into candidates while it runs (a GPU host "
           "with spare cores needs several: 4 kept up with one H100 at 880 patches/s).", 1, 64)
    batches_in_flight: int = _p(
        1, "Network batches left running while the outputs of an earlier one are collected "
           "(a runtime that computes asynchronously, the Keras runner on JAX; 0: each batch "
           "collected at once). Each holds a batch's inputs and outputs on the device.", 0, 8)
    deconvolve_processes: int = _p(
        0, "Processes that fit the calcium traces (OASIS holds the interpreter lock, so threads "
           "cannot share its work) once a movie has a million trace samples or more; 0: one per "
           "core, at most 8; 1: none besides this one. The fits are the same either way.", 0, 64)

    def __post_init__(self) -> None:
        _check_bounds(self)

    def to_dict(self) -> dict[str, Any]:
        """All values as a JSON-able nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceParams:
        """Build from :meth:`to_dict` output (missing keys: defaults; unknown keys: refused)."""
        stages = {
            "scaling": ScalingParams, "motion": MotionParams, "plan": PlanParams,
            "decide": DecideParams, "stitch": StitchParams, "resample": ResampleParams,
            "images": ImageParams,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown inference parameters: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in stages:
                value = {k: v for k, v in value.items() if k not in RETIRED.get(key, ())}
                fields = {f.name for f in dataclasses.fields(stages[key])}
                if set(value) - fields:
                    raise ValueError("unknown inference parameters: "
                                     f"{sorted(f'{key}.{k}' for k in set(value) - fields)}")
            kwargs[key] = stages[key](**value) if key in stages else value
        return cls(**kwargs)


def describe(cls: type = InferenceParams, prefix: str = "") -> list[dict[str, Any]]:
    """List every parameter as ``{"name", "default", "bounds", "description"}`` (dotted names)."""
    rows: list[dict[str, Any]] = []
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:  # a nested stage
            rows.extend(describe(type(f.default_factory()), prefix=f"{prefix}{f.name}."))
            continue
        rows.append({
            "name": prefix + f.name,
            "default": f.default,
            "bounds": f.metadata.get("bounds"),
            "description": f.metadata.get("description", ""),
        })
    return rows

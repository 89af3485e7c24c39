"""Temporal binning and spatial rescaling before the network, and the way back to the movie's grid.

The network sees a *network movie*: bins of ``temporal_bin`` consecutive frames averaged (the last
bin may hold fewer frames), each frame resized by ``spatial_scale`` (scikit-image
``transform.resize``, bilinear, with anti-aliasing when shrinking). :class:`ResampledMovie` reads it
lazily, one block of frames at a time, so the engine's plan, patches, scaling and motion correction
all run on it unchanged. The result is brought back to the movie: footprints and images resized to
``(H, W)``, traces linearly interpolated from bin centres to every frame
(:func:`traces_to_frames`), the denoised movie repeated over each bin's frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.transform import resize

from model.inference.params import ResampleParams
from model.inference.somasize import SomaSize
from model.inference.source import frames_per_read


def card_value(card: Any, key: str) -> Any:
    """A model card field (card object or mapping); ``None`` when missing."""
    if isinstance(card, dict):
        return card.get(key)
    return getattr(card, key, None)


@dataclass(frozen=True)
class Resampling:
    """What the network sees, relative to the movie.

    Attributes
    ----------
    temporal_bin : int
    spatial_scale : float
    record : dict
        JSON-able account of how the two were chosen (stored in the result's ``resample``
        attribute).
    """

    temporal_bin: int
    spatial_scale: float
    record: dict[str, Any]

    @property
    def active(self) -> bool:
        return self.temporal_bin != 1 or self.spatial_scale != 1.0


def network_shape(shape: tuple[int, int, int], temporal_bin: int,
                  spatial_scale: float) -> tuple[int, int, int]:
    """``(ceil(T / bin), round(H * scale), round(W * scale))``, each at least 1."""
    t, h, w = (int(v) for v in shape)
    return (math.ceil(t / temporal_bin), max(1, round(h * spatial_scale)),
            max(1, round(w * spatial_scale)))


#: An estimated soma diameter within this factor of the model's trained one leaves the frames as
#: they are: the estimate's own spread is about 15 % (``model.inference.somasize``) and the models
#: were trained on somata spanning about +-28 % of their typical size.
AUTO_SCALE_TOLERANCE = 1.2
#: Automatic resizing only shrinks frames, and by this factor at most (an estimate beyond it is
#: more likely wrong than a movie that needs more). Frames whose somata are smaller than the
#: model's are not enlarged unless asked: on the real development recording, enlarging its
#: somata (estimated 7.9 px) to the model's 12.5 px lowered F1 from 0.41 to 0.31
#: (docs/decision-rules.md).
AUTO_SCALE_MIN = 0.4


#: Why a movie has no soma diameter: its mean image shows no soma-sized structure above its
#: noise, or its frames are too small or too few to tell (:mod:`.somasize`). The decisions then
#: use no mean-image rule (:func:`shows_somata`).
NOT_ESTIMATED = "not estimated: no soma-sized structure in the mean image (or frames under 64 px)"


def shows_somata(record: dict[str, Any] | None) -> bool:
    """Whether the mean image of the movie a plan's ``resample`` record describes shows somata
    (a soma diameter was estimated or given): only then do the rules that judge the network's
    neurons by the mean image apply (soma contrast, refinement, dim somata). A record from before
    the diameter was recorded counts as showing them, as those rules always applied then."""
    record = record or {}
    return "soma_diameter_px" not in record or record["soma_diameter_px"] is not None


def trained_diameter_px(card: Any) -> float | None:
    """The soma diameter in pixels the model was trained on (card ``neuron_diameter_um`` /
    ``pixel_size_um``), ``None`` when the card lacks either."""
    diameter, pixel = card_value(card, "neuron_diameter_um"), card_value(card, "pixel_size_um")
    return float(diameter) / float(pixel) if diameter and pixel else None


def choose(movie: Any, card: Any, params: ResampleParams,
           soma: SomaSize | None = None) -> Resampling:
    """The bin and scale for ``movie`` and the model ``card`` (see :class:`ResampleParams`).

    ``soma``: the diameter estimated from the movie (:func:`~.somasize.estimate_soma_diameter`),
    which sets the scale when neither ``spatial_scale``, ``rescale`` nor ``soma_diameter_px``
    is given, and is recorded whatever sets it (the decisions use it).

    Raises
    ------
    ValueError
        When an option that insists on a derived value lacks what it needs (the movie's frame
        rate or pixel size, or the model card's values), naming what is missing.
    """
    fps = getattr(movie, "fps", None)
    model_fps = card_value(card, "frame_rate_hz")
    record: dict[str, Any] = {"frame_rate_hz": fps, "model_frame_rate_hz": model_fps}
    if params.temporal_bin is not None:
        temporal_bin = params.temporal_bin
        record["temporal_bin_from"] = "given"
    elif fps and model_fps:
        temporal_bin = max(1, round(float(fps) / float(model_fps)))
        record["temporal_bin_from"] = "frame rates"
    elif params.match_frame_rate:
        missing = [what for what, value in (("the movie's frame rate (fps)", fps),
                                            ("frame_rate_hz in the model card", model_fps))
                   if not value]
        raise ValueError(f"match_frame_rate needs {' and '.join(missing)}; give temporal_bin "
                         "instead")
    else:
        temporal_bin = 1
        record["temporal_bin_from"] = ("frame rate unknown" if not fps
                                       else "model frame rate unknown")
    record["temporal_bin"] = temporal_bin
    record["network_frame_rate_hz"] = float(fps) / temporal_bin if fps else None

    scale, diameter = 1.0, None
    model_px, model_diameter = card_value(card, "pixel_size_um"), card_value(card,
                                                                             "neuron_diameter_um")
    trained = trained_diameter_px(card)
    record.update(pixel_size_um=params.pixel_size_um, model_pixel_size_um=model_px,
                  neuron_diameter_um=params.neuron_diameter_um or model_diameter,
                  model_neuron_diameter_um=model_diameter, model_soma_diameter_px=trained)
    if params.spatial_scale is not None:
        scale = params.spatial_scale
        record["spatial_scale_from"] = "given"
        diameter = soma.diameter_px if soma is not None else None
        record.update(soma_diameter_px=diameter, soma_diameter_from=(
            "estimated from the mean image" if soma is not None else NOT_ESTIMATED))
    elif params.rescale:
        missing = [what for what, value in (
            ("the movie's pixel_size_um", params.pixel_size_um),
            ("pixel_size_um in the model card", model_px),
            ("neuron_diameter_um in the model card", model_diameter)) if not value]
        if missing:
            raise ValueError(f"rescale needs {', '.join(missing)}; give spatial_scale instead")
        diameter = float(params.neuron_diameter_um or model_diameter) / params.pixel_size_um
        scale = trained / diameter
        if not 0.05 <= scale <= 20.0:
            raise ValueError(f"rescale would resize frames by {scale:.3g}; somata of "
                             f"{diameter:.3g} px against {trained:.3g} px trained is outside "
                             "0.05-20")
        record.update(soma_diameter_px=diameter, soma_diameter_from="micrometres",
                      spatial_scale_from="rescale")
    else:
        if params.soma_diameter_px is not None:
            diameter = float(params.soma_diameter_px)
            record["soma_diameter_from"] = "given"
        elif soma is not None:
            diameter = soma.diameter_px
            record["soma_diameter_from"] = "estimated from the mean image"
        else:
            record["soma_diameter_from"] = NOT_ESTIMATED
        record["soma_diameter_px"] = diameter
        if diameter and trained:
            wanted = trained / diameter
            if params.soma_diameter_px is not None:
                scale = float(min(max(wanted, 0.05), 20.0))
                record["spatial_scale_from"] = "soma diameter"
            elif wanted < 1 / AUTO_SCALE_TOLERANCE:
                scale = float(max(wanted, AUTO_SCALE_MIN))
                record["spatial_scale_from"] = "soma diameter"
            elif wanted > AUTO_SCALE_TOLERANCE:
                record["spatial_scale_from"] = ("somata smaller than the model's: frames not "
                                                "enlarged (give soma_diameter_px to enlarge them)")
            else:
                record["spatial_scale_from"] = "soma diameter within 20 % of the model's"
        else:
            record["spatial_scale_from"] = "no soma diameter to match"
    record["spatial_scale"] = float(scale)
    # the somata's size as the network sees them (what the decisions on its grid use)
    record["network_soma_diameter_px"] = (diameter * scale if diameter else trained)
    return Resampling(temporal_bin=int(temporal_bin), spatial_scale=float(scale), record=record)


def describe(record: dict[str, Any]) -> str:
    """One line for people from :func:`choose`'s record (and the engine's ``input`` entry): the
    soma diameter and frame rate found, and what was done with them."""
    parts = []
    diameter = record.get("soma_diameter_px")
    scale = record.get("spatial_scale", 1.0)
    if diameter:
        parts.append(f"soma diameter {diameter:.1f} px ({record.get('soma_diameter_from')}), "
                     f"the model's {record.get('model_soma_diameter_px') or 0:.1f} px")
    else:
        parts.append(f"soma diameter {record.get('soma_diameter_from', 'unknown')}")
    reason = str(record.get("spatial_scale_from", ""))
    parts.append(f"frames resized by {scale:.3g}" if scale != 1.0 else
                 "frames not enlarged (give --soma-diameter to)" if reason.startswith("somata")
                 else "frames not resized")
    fps, bin_ = record.get("frame_rate_hz"), record.get("temporal_bin", 1)
    model_fps = record.get("model_frame_rate_hz")
    rate = f"frame rate {fps:g} Hz" if fps else "frame rate unknown"
    if model_fps:
        rate += f", the model's {model_fps:g} Hz"
    parts.append(rate + (f": {bin_} frames binned into one" if bin_ > 1 else ": not binned"))
    if str(record.get("input", "")).startswith("as given"):
        parts.append("values already within [0, 1]: fed as they are")
    return "; ".join(parts)


def resize_frames(frames: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(t, h, w)`` -> ``(t, *shape)`` float32: bilinear, anti-aliased when shrinking."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.shape[1:] == tuple(shape):
        return frames
    shrink = shape[0] < frames.shape[1] or shape[1] < frames.shape[2]
    out = resize(frames, (frames.shape[0], *shape), order=1, mode="edge", anti_aliasing=shrink,
                 preserve_range=True)
    return out.astype(np.float32, copy=False)


def bin_frames(frames: Any, temporal_bin: int) -> np.ndarray:
    """Means of ``temporal_bin`` consecutive frames ``(ceil(T / bin), H, W)``, float32; the last
    bin averages what is left.

    The sums run in float32 straight from the reader's dtype (uint16 as a rule), so no float32
    copy of the unbinned block is made: 14x faster than converting first on 512 x 512 frames.
    """
    frames = np.asarray(frames)
    n_full, rest = divmod(frames.shape[0], temporal_bin)
    parts = []
    if n_full:
        full = frames[:n_full * temporal_bin].reshape(n_full, temporal_bin, *frames.shape[1:])
        parts.append(np.divide(full.sum(axis=1, dtype=np.float32), np.float32(temporal_bin),
                               dtype=np.float32))
    if rest:
        parts.append(np.divide(frames[n_full * temporal_bin:].sum(axis=0, keepdims=True,
                                                                  dtype=np.float32),
                               np.float32(rest), dtype=np.float32))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class ResampledMovie:
    """The network movie of ``movie``: binned frames, resized; read lazily like a movie reader.

    Parameters
    ----------
    movie : MovieLike
        ``(T, H, W)`` with ``.read``.
    temporal_bin : int
    spatial_scale : float
    """

    def __init__(self, movie: Any, temporal_bin: int, spatial_scale: float) -> None:
        self.source = movie
        self.temporal_bin = int(temporal_bin)
        self.spatial_scale = float(spatial_scale)
        self.source_shape = tuple(int(s) for s in movie.shape)
        self.shape = network_shape(self.source_shape, self.temporal_bin, self.spatial_scale)
        self.dtype = np.dtype(np.float32)
        fps = getattr(movie, "fps", None)
        self.fps = float(fps) / self.temporal_bin if fps else None
        self.path = getattr(movie, "path", None)
        self.name = getattr(movie, "name", "<array>")

    def _binned(self, t0: int, t1: int, y: slice, x: slice) -> np.ndarray:
        b, n_frames = self.temporal_bin, self.source_shape[0]
        first, stop = t0 * b, min(t1 * b, n_frames)
        step = frames_per_read(self.source, b)  # whole bins, about 16 MB at a time
        out = [bin_frames(self.source.read(start, min(stop, start + step), y=y, x=x), b)
               for start in range(first, stop, step)]
        return np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)

    def read(self, t0: int, t1: int, *, y: slice = slice(None),
             x: slice = slice(None)) -> np.ndarray:
        """Network frames ``t0:t1`` of region ``(y, x)`` (network pixels), float32."""
        t1 = min(t1, self.shape[0])
        if self.spatial_scale == 1.0:
            return self._binned(t0, t1, y, x)
        frames = resize_frames(self._binned(t0, t1, slice(None), slice(None)), self.shape[1:])
        return frames[:, y, x]


def network_movie(movie: Any, temporal_bin: int, spatial_scale: float) -> Any:
    """``movie`` itself when nothing is resampled, else a :class:`ResampledMovie` of it."""
    if temporal_bin == 1 and spatial_scale == 1.0:
        return movie
    return ResampledMovie(movie, temporal_bin, spatial_scale)


def traces_to_frames(traces: np.ndarray, temporal_bin: int, n_frames: int) -> np.ndarray:
    """Traces ``(K, ceil(T / bin))`` on bins -> ``(K, T)`` on frames, float32.

    Each bin's value belongs to the centre of its frames; frames between two centres are linearly
    interpolated, frames before the first / after the last centre take that bin's value.
    """
    traces = np.asarray(traces, dtype=np.float32)
    if temporal_bin == 1:
        return traces[:, :n_frames]
    starts = np.arange(traces.shape[1]) * temporal_bin
    stops = np.minimum(starts + temporal_bin, n_frames)
    centres = (starts + stops - 1) / 2.0
    frames = np.arange(n_frames, dtype=np.float64)
    out = np.empty((traces.shape[0], n_frames), np.float32)
    for k, trace in enumerate(traces):
        out[k] = np.interp(frames, centres, trace)
    return out


def image_to_movie(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A network-resolution image ``(h, w)`` resized to the movie's ``(H, W)``, float32."""
    return resize_frames(np.asarray(image, np.float32)[None], shape)[0]


def footprint_to_movie(values: np.ndarray, y0: int, x0: int, network_frame: tuple[int, int],
                       frame: tuple[int, int],
                       threshold: float) -> tuple[np.ndarray, int, int] | None:
    """A footprint on the network grid (``values`` at ``(y0, x0)``) on the movie's grid.

    The footprint is resized with the frame (bilinear), and pixels above ``threshold`` keep their
    value. Returns ``(values, y0, x0)`` cropped to those pixels, or ``None`` when none is left.
    """
    canvas = np.zeros(network_frame, np.float32)
    h, w = values.shape
    canvas[y0:y0 + h, x0:x0 + w] = values
    full = resize(canvas, frame, order=1, mode="constant", anti_aliasing=False,
                  preserve_range=True).astype(np.float32)
    on = full > threshold
    if not on.any():
        return None
    ys, xs = np.nonzero(on)
    ya, yb, xa, xb = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return np.where(on[ya:yb, xa:xb], full[ya:yb, xa:xb], 0.0).astype(np.float32), int(ya), int(xa)

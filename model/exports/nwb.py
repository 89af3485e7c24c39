"""NWB export: footprints as a PlaneSegmentation, traces as a RoiResponseSeries (pynwb).

Layout of the file written by :func:`write_nwb`::

    /general/devices/microscope                  Device
    /general/optophysiology/imaging_plane        ImagingPlane (rate = fs)
    /processing/ophys                            ProcessingModule "ophys"
        ImageSegmentation/PlaneSegmentation      image_mask (K, W, H) + per-neuron columns
        Fluorescence/RoiResponseSeries           data (T, K), rate fs, starting_time 0
        Fluorescence/{RawFluorescence,Neuropil}  data (T, K): read from the movie, when the
                                                 result has them
        SummaryImages/{mean,max_projection,attention,correlation}   GrayscaleImage (W, H)
        Denoised                                 TwoPhotonSeries data (T, W, H), when the result
                                                 has the denoised movie

NWB orders image axes (x, y): width before height (``ImageSeries.data`` is ``(frame, x, y)``,
``Image`` is ``(x, y)``, ``image_mask`` is ``(num_roi, num_x, num_y)``), whereas a caimx result,
like every movie in caimx, is ``(..., H, W)`` = ``(..., y, x)``. Every image is therefore written
transposed, block by block (a few neurons or frames at a time, never a second copy of the whole
array): ``image_mask[k, x, y] == footprints[k, y, x]``. The reader ``model.io.nwb`` transposes
back, so an exported movie reads as ``(T, H, W)`` again. The ``centroid`` column (not an NWB
field) stays ``(y, x)`` like the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from model.exports.source import ExportSource

NEURON_COLUMNS = {
    "area": "footprint area in pixels",
    "snr": "transient SNR of the raw fluorescence under the footprint",
    "tile_evidence": "share of the covering tiles that detected the neuron (0..1)",
    "n_windows": "number of temporal windows the neuron was detected in",
}
TRACE_UNIT = "movie-range units"


@dataclass(frozen=True)
class NwbMetadata:
    """Session facts that the result does not know; all optional.

    ``session_start_time`` defaults to the time the result was written (not the recording time).
    """

    session_description: str | None = None
    session_start_time: datetime | None = None
    identifier: str | None = None
    experimenter: tuple[str, ...] = ()
    lab: str | None = None
    institution: str | None = None
    indicator: str | None = None
    location: str | None = None
    excitation_lambda: float | None = None
    device: str | None = None


MASK_BLOCK = 64
"""Neurons per block when writing ``image_mask``."""
FRAME_BLOCK_BYTES = 64 << 20
"""Bytes of float32 frames per block when writing the denoised movie."""


@cache
def _swap_last_axes_class() -> type:
    from hdmf.data_utils import GenericDataChunkIterator  # pynwb's stack: only when exporting

    class SwapLastAxes(GenericDataChunkIterator):
        def __init__(self, array, *, block: int, frames_per_chunk: int) -> None:
            self._array = array
            n, height, width = (int(v) for v in array.shape)
            chunk = max(1, min(frames_per_chunk, n))
            buffer = max(chunk, min(n, (block // chunk) * chunk))
            super().__init__(chunk_shape=(chunk, width, height),
                             buffer_shape=(buffer, width, height))  # fmt: skip

        def __len__(self) -> int:  # DynamicTable checks its columns' lengths
            return self.maxshape[0]

        def _get_data(self, selection: tuple[slice, slice, slice]) -> np.ndarray:
            items, xs, ys = selection
            block = np.asarray(self._array[items, ys, xs], dtype=np.float32)
            return np.ascontiguousarray(block.transpose(0, 2, 1))

        def _get_maxshape(self) -> tuple[int, int, int]:
            n, height, width = (int(v) for v in self._array.shape)
            return n, width, height

        def _get_dtype(self) -> np.dtype:
            return np.dtype(np.float32)

    return SwapLastAxes


def swap_last_axes(array, *, block: int, frames_per_chunk: int = 1):
    """``(n, H, W)`` array (numpy, zarr) as ``(n, W, H)`` float32 for NWB: an hdmf data iterator
    that reads and transposes ``block`` items (neurons, frames) at a time, so only one block is
    in memory. HDF5 chunks hold ``frames_per_chunk`` items."""
    return _swap_last_axes_class()(array, block=block, frames_per_chunk=frames_per_chunk)


def to_nwb_image(image: np.ndarray) -> np.ndarray:
    """A ``(H, W)`` image in NWB's ``(x, y)`` order."""
    return np.ascontiguousarray(np.asarray(image).T)


def build_nwbfile(source: ExportSource, *, metadata: NwbMetadata | None = None):
    """An in-memory ``pynwb.NWBFile`` holding the result."""
    from hdmf.common import VectorData
    from pynwb import NWBFile
    from pynwb.base import Images
    from pynwb.image import GrayscaleImage
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, TwoPhotonSeries

    meta = metadata or NwbMetadata()
    result = source.result
    n_frames, height, width = source.movie_shape
    model = source.model
    input_attrs = result.attrs.get("input") or {}
    nwbfile = NWBFile(
        session_description=meta.session_description
        or f"caimx neuron footprints and traces of {source.input_name}",
        identifier=meta.identifier or (input_attrs.get("sha256") or source.path.name),
        session_start_time=meta.session_start_time or source.created,
        experimenter=list(meta.experimenter) or None,
        lab=meta.lab,
        institution=meta.institution,
        source_script=f"caimx {result.attrs.get('software', {}).get('caimx', '')}".strip(),
        source_script_file_name="caimx",
        notes=json.dumps({"input": input_attrs, "model": {k: model.get(k) for k in
                                                          ("name", "version")}}),
    )
    device = nwbfile.create_device(name="microscope", description=meta.device or "not recorded")
    channel = OpticalChannel(name="channel", description="imaging channel",
                             emission_lambda=float("nan"))
    plane = nwbfile.create_imaging_plane(
        name="imaging_plane", optical_channel=channel, device=device,
        description=f"{height} x {width} pixels, {n_frames} frames of {source.input_name}",
        excitation_lambda=meta.excitation_lambda if meta.excitation_lambda else float("nan"),
        indicator=meta.indicator or "not recorded", location=meta.location or "not recorded",
        imaging_rate=source.fs,
    )
    ophys = nwbfile.create_processing_module(
        name="ophys",
        description=f"neurons found by the {model.get('name', 'caimx')} network "
                    f"(version {model.get('version', '?')})" + _computed_by(result.attrs),
    )
    segmentation = ImageSegmentation(name="ImageSegmentation")
    ophys.add(segmentation)
    k = result.n_neurons
    masks = (swap_last_axes(result.footprints, block=MASK_BLOCK) if k else
             np.zeros((0, width, height), np.float32))  # fmt: skip
    columns = [VectorData(name="image_mask", data=masks,
                          description="footprint of each neuron, pixels (x, y) as NWB orders "
                                      "them: image_mask[k, x, y]")]
    columns += [VectorData(name=name, description=text, data=source.neuron(name))
                for name, text in NEURON_COLUMNS.items()]
    columns.append(VectorData(name="centroid", data=source.neuron("centroid").reshape(k, 2),
                              description="(y, x) centre of the footprint, pixels"))
    planes = segmentation.create_plane_segmentation(
        name="PlaneSegmentation", imaging_plane=plane, id=list(range(k)), columns=columns,
        description="mean opened-mask value of each neuron (0 outside it), pixels (x, y)",
    )
    rois = planes.create_roi_table_region(
        region=list(range(k)), description="every neuron")
    fluorescence = Fluorescence(name="Fluorescence")
    ophys.add(fluorescence)
    time_note = ("" if source.fs_known else
                 " The movie recorded no frame rate; rate 1.0 means times are frame indices.")
    fluorescence.create_roi_response_series(
        name="RoiResponseSeries", data=np.ascontiguousarray(result.traces.T), rois=rois,
        unit=TRACE_UNIT, rate=source.fs, starting_time=0.0,
        description="network trace per neuron; multiply by plan.movie_high - plan.movie_low "
                    "for raw intensity differences (see the caimx result format)." + time_note,
        comments=json.dumps({"plan": result.attrs.get("plan", {})}),
    )
    series: list[tuple[str, np.ndarray, str, str]] = []
    if result.fluorescence is not None and result.neuropil is not None:
        ring = json.dumps(result.attrs.get("fluorescence", {}))
        series += [
            ("RawFluorescence", result.fluorescence, "footprint-weighted mean of the "
             "motion-corrected movie per neuron, raw intensity units", ring),
            ("Neuropil", result.neuropil, "mean of a ring of pixels around each neuron that "
             "leaves every neuron out, raw intensity units; RawFluorescence - coefficient * "
             "Neuropil is the corrected trace (coefficient in comments)", ring)]
    if result.calcium is not None and result.spikes is not None:
        method = json.dumps(result.attrs.get("deconvolution", {}))
        series += [
            ("Calcium", result.calcium, "denoised calcium: the corrected fluorescence fitted "
             "by OASIS deconvolution (AR(1), sparse non-negative spikes), baseline removed, raw "
             "intensity units", method),
            ("Deconvolved", result.spikes, "OASIS's inferred spike train (deconvolved "
             "activity), same units as Calcium", method)]
    for name, values, text, comments in series:
        fluorescence.create_roi_response_series(
            name=name, data=np.ascontiguousarray(values.T), rois=rois, unit="a.u.",
            rate=source.fs, starting_time=0.0, description=text + "." + time_note,
            comments=comments)  # fmt: skip
    images = [GrayscaleImage(name=name, data=to_nwb_image(result.images[key]),
                             description=text + ", pixels (x, y)")
              for name, key, text in (
                  ("mean", "mean_image", "mean frame, raw intensity units"),
                  ("max_projection", "max_projection", "per-pixel maximum, raw intensity units"),
                  ("attention", "attention_mean", "network attention averaged over time"),
                  ("correlation", "correlation_image", "correlation of each pixel with its "
                   "neighbourhood over time (binned frames, -1 to 1)"))
              if key in result.images]  # results made before the correlation image lack it
    ophys.add(Images(name="SummaryImages", images=images,
                     description="summary images of the movie"))
    if result.denoised is not None:
        frames = max(1, FRAME_BLOCK_BYTES // (4 * height * width))
        ophys.add(TwoPhotonSeries(
            name="Denoised", imaging_plane=plane, rate=source.fs, starting_time=0.0,
            data=swap_last_axes(result.denoised, block=frames, frames_per_chunk=min(frames, 32)),
            unit=TRACE_UNIT, dimension=[width, height],
            description="the network's denoised movie (see the caimx result format), frames "
                        "(x, y) as NWB orders them: data[t, x, y]." + time_note,
        ))  # fmt: skip
    return nwbfile


def write_nwb(
    source: ExportSource, path: str | Path, *, metadata: NwbMetadata | None = None
) -> Path:
    """Write ``source`` as one NWB (HDF5) file at ``path`` and return the path."""
    from pynwb import NWBHDF5IO

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nwbfile = build_nwbfile(source, metadata=metadata)
    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)
    return path


def _computed_by(attrs: dict[str, Any]) -> str:
    """``", computed by <runtime>"`` from the result's ``software.network`` (empty in results
    from before it was recorded)."""
    runtimes = attrs.get("software", {}).get("network") or []
    return f", computed by {'; '.join(runtimes)}" if runtimes else ""

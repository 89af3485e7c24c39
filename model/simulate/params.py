"""Parameters of the two-photon movie simulator: one frozen dataclass, documented per field.

Every field carries its description, unit and bounds in ``dataclasses.field(metadata=...)``, so the
parameter table in ``docs/simulation.md`` can be generated with :func:`parameter_table`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

IndicatorName = Literal["GCaMP6f", "GCaMP6s", "GCaMP7f", "GCaMP8m"]
OutputDtype = Literal["float32", "uint16"]


@dataclass(frozen=True)
class Indicator:
    """Response of a genetically encoded calcium indicator to action potentials.

    The calcium transient of one spike is a double exponential with rise time ``rise_s`` and
    decay time ``decay_s``, scaled to peak 1. The fluorescence change is the saturating map
    ``dF/F = dff_max * (1 - exp(-c * dff_1ap / dff_max))`` of the summed transients ``c``, which is
    linear (``dff_1ap`` per spike) for isolated spikes and saturates at ``dff_max`` for bursts.
    """

    name: str
    rise_s: float
    decay_s: float
    dff_1ap: float
    dff_max: float


#: Indicator kinetics, rounded from published single-spike characterisations
#: (Chen et al. 2013; Dana et al. 2019; Zhang et al. 2023).
INDICATORS: dict[str, Indicator] = {
    "GCaMP6f": Indicator("GCaMP6f", rise_s=0.045, decay_s=0.40, dff_1ap=0.19, dff_max=4.0),
    "GCaMP6s": Indicator("GCaMP6s", rise_s=0.150, decay_s=1.50, dff_1ap=0.25, dff_max=8.0),
    "GCaMP7f": Indicator("GCaMP7f", rise_s=0.030, decay_s=0.45, dff_1ap=0.22, dff_max=5.0),
    "GCaMP8m": Indicator("GCaMP8m", rise_s=0.008, decay_s=0.20, dff_1ap=0.30, dff_max=5.0),
}


def _f(default: Any, doc: str, *, unit: str = "", lo: float | None = None,
       hi: float | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "unit": unit, "lo": lo, "hi": hi})


@dataclass(frozen=True)
class SimulationParams:
    """Everything that defines a simulated movie; the same params and seed give the same bytes.

    Brightness is expressed in expected photons per pixel per frame (``photons`` is the neuropil
    level, the SNR knob); the detector turns photons into ADU with ``gain``, ``offset`` and
    Gaussian read noise. See ``docs/simulation.md`` for the generative model.
    """

    height: int = _f(512, "Field of view height.", unit="px", lo=8)
    width: int = _f(512, "Field of view width.", unit="px", lo=8)
    frames: int = _f(2000, "Number of frames T.", unit="frames", lo=1)
    fps: float = _f(30.0, "Frame rate.", unit="Hz", lo=0.5, hi=1000.0)
    pixel_size_um: float = _f(1.0, "Pixel size in the sample plane.", unit="um", lo=0.1, hi=10.0)
    soma_diameter_um: tuple[float, float] = _f(
        (9.0, 16.0), "Range of soma diameters (uniform), mean of the two ellipse axes.", unit="um")
    soma_elongation: float = _f(
        0.25, "Maximum relative difference of the ellipse axes.", lo=0.0, hi=0.8)
    edge_softness_um: float = _f(1.0, "Width of the soft soma edge (logistic scale).", unit="um",
                                 lo=0.05)
    density_per_mm2: float = _f(
        800.0, "Somata per mm^2 of the imaged plane (Poisson number).", unit="1/mm^2", lo=0.0)
    soma_separation: float = _f(
        0.7, "Smallest distance between two soma centres, as a fraction of the sum of their "
        "radii (a cell that would come closer is moved, up to 50 tries, else left out). Somata "
        "do not interpenetrate, so cells cut by one optical section overlap only at their rims, "
        "through the focus's axial extent (two touching 12 um somata 4-5 um above and below "
        "the focal plane show 0.7-0.8 of their summed apparent radii apart); 0 places centres "
        "independently (overlap of any extent).", lo=0.0, hi=1.0)
    silent_fraction: float = _f(0.3, "Fraction of cells that never spike.", lo=0.0, hi=1.0)
    indicator: IndicatorName = _f(  # noqa: RUF009 (a frozen field spec, not a shared default)
        "GCaMP6f", "Calcium indicator (kinetics and saturation).")
    rate_hz: tuple[float, float] = _f(
        (0.1, 5.0), "Range of Poisson firing rates, log-uniform per active cell.", unit="Hz")
    burst_rate_hz: float = _f(0.05, "Rate of burst events per active cell.", unit="Hz", lo=0.0)
    burst_spikes: tuple[int, int] = _f((3, 8), "Spikes per burst (uniform, inclusive).")
    burst_duration_s: float = _f(0.15, "Duration over which a burst's spikes spread.", unit="s",
                                 lo=0.0)
    baseline: tuple[float, float] = _f(
        (0.4, 1.6), "Resting soma brightness relative to the neuropil mean (uniform).", lo=0.0)
    soma_occlusion: tuple[float, float] = _f(
        (0.0, 0.0), "Range of the fraction of the neuropil's light a soma displaces (uniform per "
        "cell): a cell body holds no neuropil, so with occlusion near 1 and a low baseline a soma "
        "is darker than the neuropil around it at rest (dim GCaMP6s somata in bright neuropil). "
        "(0, 0): somata add to the neuropil.")
    amplitude_spread: float = _f(
        0.35, "Log-normal sigma of the per-cell dF/F gain around the indicator's.", lo=0.0)
    nucleus_fraction: float = _f(
        0.5, "Fraction of somata with a dark nucleus (footprint stays >= 0.55).", lo=0.0, hi=1.0)
    process_fraction: float = _f(
        0.0, "Fraction of cells with faint dendrite-like processes (weight 0.1-0.3).",
        lo=0.0, hi=1.0)
    neuropil_contrast: float = _f(
        0.3, "Relative spatial variation of the smooth neuropil.", lo=0.0, hi=1.0)
    neuropil_scale_um: float = _f(40.0, "Spatial correlation length of the neuropil.", unit="um",
                                  lo=1.0)
    neuropil_fluctuation: float = _f(
        0.08, "Relative amplitude of the slow neuropil fluctuations.", lo=0.0, hi=1.0)
    neuropil_timescale_s: float = _f(2.0, "Time scale of the neuropil fluctuations.", unit="s",
                                     lo=0.01)
    vessels: int = _f(2, "Blood vessels per 512 um x 512 um (Poisson number).", lo=0)
    vessel_width_um: tuple[float, float] = _f((6.0, 15.0), "Vessel width range.", unit="um")
    vessel_depth: tuple[float, float] = _f(
        (0.4, 0.8), "Fraction of light a vessel blocks at its centre.", lo=0.0, hi=1.0)
    bleach_fraction: float = _f(0.1, "Fluorescence lost to photobleaching at t -> inf.",
                                lo=0.0, hi=0.99)
    bleach_tau_s: float = _f(300.0, "Photobleaching time constant.", unit="s", lo=0.1)
    photons: float = _f(
        4.0, "Expected photons per pixel per frame at the neuropil mean (the SNR knob).",
        unit="photons", lo=1e-3)
    gain: float = _f(20.0, "Detector gain.", unit="ADU/photon", lo=1e-3)
    read_noise: float = _f(10.0, "Gaussian read noise sigma.", unit="ADU", lo=0.0)
    offset: float = _f(100.0, "Detector offset.", unit="ADU")
    noise: bool = _f(True, "Add shot and read noise (False: the movie is the clean movie).")
    motion_um: float = _f(
        0.0, "Rigid motion: standard deviation of the frame shifts (0 disables).", unit="um",
        lo=0.0)
    dtype: OutputDtype = _f(  # noqa: RUF009 (a frozen field spec, not a shared default)
        "float32", "Movie dtype; uint16 is rounded and clipped.")
    seed: int = _f(0, "Seed of every random choice.", lo=0)

    def __post_init__(self) -> None:
        if self.indicator not in INDICATORS:
            raise ValueError(
                f"unknown indicator {self.indicator!r}; choose one of {sorted(INDICATORS)}")
        if self.dtype not in ("float32", "uint16"):
            raise ValueError(f"dtype must be 'float32' or 'uint16', not {self.dtype!r}")
        for f in dataclasses.fields(self):
            lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                if len(value) != 2 or value[0] > value[1] or value[0] < 0:
                    raise ValueError(f"{f.name} must be a (low, high) pair, got {value!r}")
                continue
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"{f.name}={value!r} is outside [{lo}, {hi}]")

    @property
    def kinetics(self) -> Indicator:
        """The :class:`Indicator` named by :attr:`indicator`."""
        return INDICATORS[self.indicator]

    def replace(self, **changes: Any) -> SimulationParams:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationParams:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fixed)


def parameter_table() -> str:
    """Markdown table of all :class:`SimulationParams` fields (name, default, unit, meaning)."""
    rows = ["| parameter | default | unit | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(SimulationParams):
        unit = f.metadata.get("unit", "")
        rows.append(f"| `{f.name}` | `{f.default!r}` | {unit} | {f.metadata['doc']} |")
    return "\n".join(rows)

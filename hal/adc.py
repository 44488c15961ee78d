"""The analog front-end every source passes through: an ADS1299-like 24-bit ADC.

Whatever the source (virtual sleeper, recording, board), the firmware sees what a real
front-end would deliver: input-referred noise added, the programmable gain (24) applied,
±187.5 mV input range (4.5 V reference / gain 24) with clipping flagged, quantised to
24-bit two's complement codes, and a sample clock that drifts by a few ppm from nominal.
The scale is the OpenBCI Cyton one: 4.5 V / 24 / (2**23 - 1) volts per count.

The firmware receives counts and converts them to microvolts with :attr:`AdcModel.uv_per_count`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numba
import numpy as np

from hal.base import SignalSource, SourceInfo, UserInputError

logger = logging.getLogger(__name__)

#: Roles that are biopotentials and go through the ADC. Accelerometers do not.
BIOPOTENTIAL_ROLES = ("eeg", "eog", "emg", "ecg")

#: Per-sample flag bits delivered with each block.
FLAG_CLIPPED = 1  # input beyond the ADC range: the code is railed
FLAG_LEAD_OFF = 2  # the source had no value (lead-off, gap, NaN/Inf)


@numba.njit(cache=True)
def _quantise(
    volts: np.ndarray, noise: np.ndarray, counts_per_volt: float, max_code: float, out_scale: float
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Noise, gain and rounding, lead-off and clipping, then ``out_scale`` per code, in one
    pass over the samples.

    Why numba: the vectorised form made six passes and as many temporaries over every
    sample of the night (add, scale, round, two range checks, rescale); the arithmetic per
    sample is the same, in the same order, so the result is bit-identical.
    """
    n_rows, n = volts.shape
    out = np.empty((n_rows, n))
    flags = np.zeros((n_rows, n), dtype=np.uint8)
    for r in range(n_rows):
        for i in range(n):
            c = np.rint((volts[r, i] + noise[r, i]) * counts_per_volt)
            if not np.isfinite(c):
                flags[r, i] = FLAG_LEAD_OFF
                c = 0.0
            elif c > max_code:
                flags[r, i] = FLAG_CLIPPED
                c = max_code
            elif c < -max_code:
                flags[r, i] = FLAG_CLIPPED
                c = -max_code
            out[r, i] = c * out_scale
    return out, flags


@dataclass(frozen=True)
class AdcModel:
    """Parameters of the front-end.

    Parameters
    ----------
    gain : int
        Programmable gain of the amplifier.
    bits : int
        Resolution of the converter.
    vref : float
        Reference voltage in volts.
    noise_uv_rms : float
        Input-referred noise, µV RMS over the band (ADS1299 at gain 24: ~0.14 µV RMS
        in 0.01-70 Hz, we take a conservative 0.5 µV for electrode noise too).
    drift_ppm : float
        Sample-clock error: the device's rate is ``sfreq * (1 + drift_ppm * 1e-6)``.
    """

    gain: int = 24
    bits: int = 24
    vref: float = 4.5
    noise_uv_rms: float = 0.5
    drift_ppm: float = 0.0

    def __post_init__(self) -> None:
        if self.gain <= 0 or self.bits < 8 or self.vref <= 0 or self.noise_uv_rms < 0:
            raise UserInputError(
                f"Invalid ADC model: expected gain > 0, bits >= 8, vref > 0, noise >= 0, "
                f"got gain={self.gain}, bits={self.bits}, vref={self.vref}, "
                f"noise_uv_rms={self.noise_uv_rms}."
            )
        if abs(self.drift_ppm) > 1000:
            raise UserInputError(
                f"Invalid ADC drift_ppm: expected |drift| <= 1000 ppm, got {self.drift_ppm}."
            )

    @property
    def full_scale_v(self) -> float:
        """Largest input in volts before the converter rails (±187.5 mV at gain 24)."""
        return self.vref / self.gain

    @property
    def max_code(self) -> int:
        """Largest positive code (2**23 - 1 for 24 bits)."""
        return 2 ** (self.bits - 1) - 1

    @property
    def uv_per_count(self) -> float:
        """Microvolts per count, the scale the firmware applies."""
        return self.full_scale_v / self.max_code * 1e6

    def convert(self, volts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Convert electrode volts (noise already added) to ADC codes.

        Parameters
        ----------
        volts : ndarray, shape (n_channels, n_samples)
            Input in volts; NaN/Inf marks samples without a value.

        Returns
        -------
        codes : ndarray of float64 (integer values)
            Two's complement codes, railed at ``±max_code`` when clipped, 0 when lead-off.
        flags : ndarray of uint8
            :data:`FLAG_CLIPPED` and :data:`FLAG_LEAD_OFF` bits per sample.
        """
        v = np.asarray(volts, dtype=np.float64)
        return self._quantise(v, np.zeros_like(v), 1.0)

    def _quantise(
        self, volts: np.ndarray, noise: np.ndarray, out_scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`convert` of ``volts + noise``, each code multiplied by ``out_scale``."""
        v = np.atleast_2d(volts)
        out, flags = _quantise(
            v,
            np.broadcast_to(noise, v.shape),
            self.max_code / self.full_scale_v,
            float(self.max_code),
            float(out_scale),
        )
        return out.reshape(np.shape(volts)), flags.reshape(np.shape(volts))


class FrontEnd:
    """A source seen through the ADC: what the firmware's DMA delivers.

    Biopotential channels (:data:`BIOPOTENTIAL_ROLES`) are converted to codes and back to
    µV with the firmware's scale; other channels (accelerometer) pass through unscaled.
    The noise of a sample range depends only on the seed and the range's position, so a
    re-read of the same samples gives the same values.

    Parameters
    ----------
    source : SignalSource
        Where the samples come from.
    adc : AdcModel
        The converter.
    seed : int
        Seed of the input-referred noise.
    """

    #: Noise comes from a seeded table read at a seeded offset per tile of this many samples,
    #: so it never depends on how the night is cut into reads, and costs a slice, not a draw
    #: of millions of normal variates per night.
    TILE = 4096
    TABLE = 1 << 16

    def __init__(self, source: SignalSource, adc: AdcModel, seed: int) -> None:
        self.source = source
        self.adc = adc
        self.seed = int(seed)
        info = source.info
        roles = [c.role for c in info.channels]
        self.bio_rows = np.array(
            [i for i, r in enumerate(roles) if r in BIOPOTENTIAL_ROLES], dtype=int
        )
        self.all_bio = self.bio_rows.size == len(roles)
        rng = np.random.default_rng([self.seed, 0xADC])
        table = rng.standard_normal((self.bio_rows.size, self.TABLE + 2 * self.TILE))
        self._table = table * (adc.noise_uv_rms * 1e-6)
        self._offsets = rng.integers(0, self.TABLE, size=4096)

    @property
    def info(self) -> SourceInfo:
        """The source's facts (the device rate is nominal; drift shows in stimulus timing)."""
        return self.source.info

    def _noise(self, start: int, n: int) -> np.ndarray:
        first, last = start // self.TILE, (start + n - 1) // self.TILE
        pieces = []
        for tile in range(first, last + 1):
            lo = max(start, tile * self.TILE) - tile * self.TILE
            hi = min(start + n, (tile + 1) * self.TILE) - tile * self.TILE
            off = int(self._offsets[tile % self._offsets.size]) + tile // self._offsets.size
            off %= self.TABLE
            pieces.append(self._table[:, off + lo : off + hi])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Read samples ``[start, stop)`` as the firmware sees them.

        Returns
        -------
        data_uv : ndarray of float64, shape (n_channels, n)
            Microvolts for biopotentials (after quantisation), native units otherwise.
        flags : ndarray of uint8, shape (n_channels, n)
            Clip and lead-off bits.
        """
        volts = self.source.read(start, stop)
        n = volts.shape[1]
        rows = self.bio_rows
        if rows.size == 0 or n == 0:
            return np.array(volts, dtype=np.float64), np.zeros(volts.shape, dtype=np.uint8)
        bio = volts if self.all_bio else volts[rows]
        uv, bio_flags = self.adc._quantise(bio, self._noise(start, n), self.adc.uv_per_count)
        if self.all_bio:
            return uv, bio_flags
        out = np.array(volts, dtype=np.float64)
        flags = np.zeros(volts.shape, dtype=np.uint8)
        out[rows] = uv
        flags[rows] = bio_flags
        return out, flags

    def close(self) -> None:
        """Close the underlying source."""
        self.source.close()

"""Causal filters with carried state.

A device filters block by block; the simulator may filter many blocks in one call when the
result is identical. :class:`CausalFilter` guarantees that: it is a second-order-sections
IIR filter whose state is carried between calls, so filtering a night in blocks of 8 or in
chunks of 7,500 samples gives the same output (to floating-point rounding of the same
operations, which ``scipy.signal.sosfilt`` performs in the same order either way).

Why scipy and not a hand-written biquad: ``sosfilt`` is the reference implementation of a
direct-form-II-transposed cascade, which is what CMSIS-DSP's ``arm_biquad_cascade_df2T``
runs on the Cortex-M4F, so the simulated arithmetic is the device's arithmetic.
"""

from __future__ import annotations

import copy

import numpy as np
from scipy import signal

try:
    # scipy.signal.sosfilt spends ~50 µs per call validating array-API inputs, more than
    # filtering a DMA block takes; the simulator calls it thousands of times a night. Its
    # compiled kernel is the same arithmetic, so call it directly when it is there.
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - a future scipy may move it
    _sosfilt_kernel = None


def _sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.sosfilt(sos, x, axis=-1, zi=zi)`` for 2-D float64 ``x``."""
    if _sosfilt_kernel is None:
        return signal.sosfilt(sos, x, axis=-1, zi=zi)
    y = np.array(x, dtype=np.float64, order="C")  # filtered in place
    z = np.array(np.moveaxis(zi, 1, 0), order="C")  # a copy: the kernel works in place
    _sosfilt_kernel(sos, y, z)
    return y, np.moveaxis(z, 0, 1)


def copy_state(state: object) -> object:
    """A deep copy of a detector's or estimator's state (arrays, tuples, lists, scalars).

    ``copy.deepcopy`` does the same but walks its memo machinery on every call; states
    are snapshotted once per processed chunk, thousands of times a night.
    """
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, tuple):
        return tuple(copy_state(v) for v in state)
    if isinstance(state, list):
        return [copy_state(v) for v in state]
    if isinstance(state, int | float | bool | str | None | np.generic):
        return state
    return copy.deepcopy(state)


#: Cycles per sample per second-order section on a Cortex-M4F (CMSIS-DSP df2T, float32:
#: 5 multiply-accumulates plus loads/stores, measured figures are 12-16 cycles).
CYCLES_PER_SECTION_SAMPLE = 16


class CausalFilter:
    """A Butterworth band-pass (or low/high-pass) IIR filter applied causally.

    Parameters
    ----------
    band : tuple of (float or None, float or None)
        Lower and upper edge in Hz; ``None`` for a low-pass or high-pass.
    sfreq : float
        Sampling rate in Hz.
    order : int
        Butterworth order (per edge).
    n_channels : int
        Number of channels filtered in parallel (rows of the input).
    """

    def __init__(
        self,
        band: tuple[float | None, float | None],
        sfreq: float,
        order: int = 2,
        n_channels: int = 1,
    ) -> None:
        low, high = band
        nyq = sfreq / 2
        if low is not None and high is not None:
            if not 0 < low < high < nyq:
                raise ValueError(f"Band must satisfy 0 < low < high < {nyq} Hz, got {band}.")
            self.sos = signal.butter(order, [low, high], "bandpass", fs=sfreq, output="sos")
        elif high is not None:
            self.sos = signal.butter(order, high, "lowpass", fs=sfreq, output="sos")
        elif low is not None:
            self.sos = signal.butter(order, low, "highpass", fs=sfreq, output="sos")
        else:
            raise ValueError("A filter needs at least one band edge, got (None, None).")
        self.band = band
        self.sfreq = sfreq
        self.n_channels = n_channels
        self.zi = np.zeros((self.sos.shape[0], n_channels, 2))

    @property
    def n_sections(self) -> int:
        """Second-order sections in the cascade (the MCU cost scales with it)."""
        return int(self.sos.shape[0])

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample for all channels."""
        return self.n_sections * self.n_channels * CYCLES_PER_SECTION_SAMPLE

    def process(self, x: np.ndarray) -> np.ndarray:
        """Filter the next samples and carry the state.

        Parameters
        ----------
        x : ndarray, shape (n_channels, n)
            The next samples, continuing the previous call.

        Returns
        -------
        ndarray, shape (n_channels, n)
            Filtered samples.
        """
        y, self.zi = _sosfilt(self.sos, x, self.zi)
        return y

    def peek(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter without committing: return the output and the state after ``x``."""
        return _sosfilt(self.sos, x, self.zi)

    def commit(self, x: np.ndarray) -> None:
        """Advance the state over ``x`` (after a :meth:`peek` that was only partly used)."""
        _, self.zi = _sosfilt(self.sos, x, self.zi)

"""Signal quality, decided per DMA block and causally.

A block of the EEG channel used for decisions is bad when the ADC flagged a sample
(clipped or lead-off), when any sample lies more than :data:`MAX_ABS_UV` from the
electrode's DC level (no cortical signal is that large at the scalp: saturation, motion,
electrode pop), or when the last second is flat (peak-to-peak below :data:`FLAT_PTP_UV`:
a lead that fell off and reads a constant). Programs withhold stimulation while the
signal is bad and for a hold-off after it.

The DC level is tracked because the front end is DC-coupled (the ADS1299 of an OpenBCI
board, BioSemi, most BrainVision amplifiers): an electrode's half-cell offset of several
mV, drifting over minutes, carries the EEG. Judged against zero, every sample of such a
recording would be 'amplitude' and the whole night withheld. The level is the mean of
each block, smoothed over :data:`DC_TAU_S` (a slow wave of 0.5 Hz moves it by a sixth of
its amplitude); it restarts from the first block after a clipped or lead-off block.
"""

from __future__ import annotations

import numba
import numpy as np

from hal.adc import FLAG_CLIPPED, FLAG_LEAD_OFF

MAX_ABS_UV = 500.0
#: Time constant of the DC level the amplitude test is measured from: long against the
#: EEG's slowest waves, short against an electrode's drift and the step of a pop.
DC_TAU_S = 2.0
#: Above the front-end's noise floor (0.5 µV RMS gives ~3 µV peak to peak over a second),
#: below any scalp EEG (a second of it spans tens of µV in every stage).
FLAT_PTP_UV = 8.0
FLAT_WINDOW_S = 1.0

#: Cause codes, as written in events.jsonl.
CAUSES = ("ok", "clipped", "lead_off", "amplitude", "flat")

#: Cycles per sample (compare, min/max, flag test, the sum for the block mean) on the MCU.
CYCLES_PER_SAMPLE = 7


_OK, _CLIPPED, _LEAD_OFF, _AMPLITUDE, _FLAT = range(len(CAUSES))


@numba.njit(cache=True)
def _block_causes(
    x: np.ndarray,
    flags: np.ndarray,
    b: int,
    hist_max: np.ndarray,
    hist_min: np.ndarray,
    dc: float,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """Cause per block, the per-block extremes after the history, and the DC level after
    each block (for the state).

    The flat test spans the ``len(hist_max) + 1`` blocks ending at each block; the
    amplitude test measures from the DC level before the block (``dc``, NaN when it
    restarts: then from the block's own mean); causes override in the order flat <
    amplitude < clipped < lead-off.

    Why numba: NumPy reduces 8-sample blocks slowly (a short inner loop per block) and the
    sliding window needed several passes; comparisons and subtractions are exact, so the
    causes are those of the vectorised form.
    """
    keep = hist_max.shape[0]
    n_blocks = x.shape[0] // b
    all_max = np.empty(keep + n_blocks)
    all_min = np.empty(keep + n_blocks)
    all_max[:keep] = hist_max
    all_min[:keep] = hist_min
    dc_after = np.empty(n_blocks)
    for j in range(n_blocks):
        hi = lo = x[j * b]
        for i in range(j * b + 1, (j + 1) * b):
            v = x[i]
            if v > hi:
                hi = v
            if v < lo:
                lo = v
        all_max[keep + j] = hi
        all_min[keep + j] = lo
    cause = np.zeros(n_blocks, dtype=np.int8)
    for j in range(n_blocks):
        hi = all_max[j]
        lo = all_min[j]
        for k in range(j + 1, j + keep + 1):
            if all_max[k] > hi:
                hi = all_max[k]
            if all_min[k] < lo:
                lo = all_min[k]
        if hi - lo < FLAT_PTP_UV:
            cause[j] = _FLAT
        total = 0.0
        for i in range(j * b, (j + 1) * b):
            total += x[i]
        mean = total / b
        ref = mean if np.isnan(dc) else dc
        if max(all_max[keep + j] - ref, ref - all_min[keep + j]) > MAX_ABS_UV:
            cause[j] = _AMPLITUDE
        clipped = lead_off = False
        for i in range(j * b, (j + 1) * b):
            clipped |= (flags[i] & FLAG_CLIPPED) != 0
            lead_off |= (flags[i] & FLAG_LEAD_OFF) != 0
        if clipped:
            cause[j] = _CLIPPED
        if lead_off:
            cause[j] = _LEAD_OFF
        # A railed or disconnected block says nothing of the electrode's level: the level
        # restarts from the next block's mean (the offset may differ after a reconnection).
        dc = np.nan if clipped or lead_off else ref + alpha * (mean - ref)
        dc_after[j] = dc
    return cause, all_max, all_min, dc_after


class QualityMonitor:
    """Per-block signal quality of one channel with carried state.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.

    Attributes
    ----------
    window : int
        Blocks the flat test spans (:data:`FLAT_WINDOW_S`, one block at least).
    hist_max, hist_min : ndarray, shape (window - 1,)
        Per-block maximum and minimum (µV) of the last ``window - 1`` blocks judged
        (+inf and -inf before there were any: no block is flat before a whole window).
    dc : float
        The electrode's DC level (µV) after the last block judged; NaN before the first
        block and after a clipped or lead-off one.
    alpha : float
        Weight of a block's mean in the DC level (one block over :data:`DC_TAU_S`).
    """

    def __init__(self, sfreq: float, block: int) -> None:
        self.block = block
        self.window = max(1, round(FLAT_WINDOW_S * sfreq / block))
        # Per-block max and min of the last window-1 blocks (the flat test spans blocks).
        self.hist_max = np.full(self.window - 1, np.inf)
        self.hist_min = np.full(self.window - 1, -np.inf)
        self.dc = np.nan
        self.alpha = 1.0 - float(np.exp(-block / (DC_TAU_S * sfreq)))

    def peek(self, x: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, QualityScan]:
        """Judge whole blocks of one channel without committing.

        Parameters
        ----------
        x : ndarray, shape (n,)
            µV, ``n`` a multiple of the block size.
        flags : ndarray of uint8, shape (n,)
            ADC flags.

        Returns
        -------
        cause : ndarray of int8, shape (n // block,)
            Index into :data:`CAUSES` per block (0 = good).
        scan : QualityScan
            Gives the state after any number of these blocks, for :meth:`commit`.
        """
        cause, all_max, all_min, dc_after = _block_causes(
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(flags, dtype=np.uint8),
            self.block,
            self.hist_max,
            self.hist_min,
            self.dc,
            self.alpha,
        )
        return cause, QualityScan(all_max, all_min, self.window - 1, self.dc, dc_after)

    def commit(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        """Adopt a state given by :meth:`QualityScan.state`.

        Parameters
        ----------
        state : tuple
            ``(hist_max, hist_min, dc)``.
        """
        self.hist_max, self.hist_min, self.dc = state


class QualityScan:
    """Per-block extremes of a peeked stretch, with the history before it.

    Parameters
    ----------
    all_max, all_min : ndarray
        Per-block maximum and minimum (µV): the history, then the stretch's blocks.
    keep : int
        Blocks of history the monitor keeps.
    dc_before : float
        The DC level (µV) before the stretch.
    dc_after : ndarray
        The DC level after each block of the stretch.
    """

    def __init__(
        self,
        all_max: np.ndarray,
        all_min: np.ndarray,
        keep: int,
        dc_before: float,
        dc_after: np.ndarray,
    ) -> None:
        self._max, self._min, self._keep = all_max, all_min, keep
        self._dc_before, self._dc_after = dc_before, dc_after

    def state(self, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
        """State of the monitor after the first ``n_blocks`` blocks of the stretch.

        Parameters
        ----------
        n_blocks : int
            Blocks of the stretch consumed, 0 to the stretch's length.

        Returns
        -------
        tuple
            ``(hist_max, hist_min, dc)``: copies of the extremes and the DC level, for
            :meth:`QualityMonitor.commit`.
        """
        k = self._keep
        dc = float(self._dc_after[n_blocks - 1]) if n_blocks else self._dc_before
        return (
            self._max[n_blocks : n_blocks + k].copy(),
            self._min[n_blocks : n_blocks + k].copy(),
            dc,
        )

"""Signal quality, decided per DMA block and causally.

A block of the EEG channel used for decisions is bad when the ADC flagged a sample
(clipped or lead-off), when any sample exceeds :data:`MAX_ABS_UV` (no cortical signal is
that large at the scalp: saturation, motion, electrode pop), or when the last second is
flat (peak-to-peak below :data:`FLAT_PTP_UV`: a lead that fell off and reads a constant).
Programs withhold stimulation while the signal is bad and for a hold-off after it.
"""

from __future__ import annotations

import numpy as np

from hal.adc import FLAG_CLIPPED, FLAG_LEAD_OFF

MAX_ABS_UV = 500.0
#: Above the front-end's noise floor (0.5 µV RMS gives ~3 µV peak to peak over a second),
#: below any scalp EEG (a second of it spans tens of µV in every stage).
FLAT_PTP_UV = 8.0
FLAT_WINDOW_S = 1.0

#: Cause codes, as written in events.jsonl.
CAUSES = ("ok", "clipped", "lead_off", "amplitude", "flat")

#: Cycles per sample (compare, min/max, flag test) on the MCU.
CYCLES_PER_SAMPLE = 6


class QualityMonitor:
    """Per-block signal quality of one channel with carried state.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    """

    def __init__(self, sfreq: float, block: int) -> None:
        self.block = block
        self.window = max(1, round(FLAT_WINDOW_S * sfreq / block))
        # Per-block max and min of the last window-1 blocks (the flat test spans blocks).
        self.hist_max = np.full(self.window - 1, np.inf)
        self.hist_min = np.full(self.window - 1, -np.inf)

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
        b = self.block
        xb = x.reshape(-1, b)
        cause = np.zeros(xb.shape[0], dtype=np.int8)
        bmax, bmin = xb.max(axis=1), xb.min(axis=1)
        block_ptp = bmax - bmin
        all_max = np.concatenate([self.hist_max, bmax])
        all_min = np.concatenate([self.hist_min, bmin])
        # Good signal is the common case: test cheaply before building per-block masks.
        # No window can be flatter than its liveliest block, nor than any aligned group of
        # (window + 1) // 2 blocks (every window holds one whole), so the sliding test is
        # needed only when some group is nearly flat.
        if (
            self.window > 1
            and block_ptp.min() < FLAT_PTP_UV
            and self._some_flat_group(all_max, all_min)
        ):
            win = np.lib.stride_tricks.sliding_window_view
            ptp = win(all_max, self.window).max(axis=1) - win(all_min, self.window).min(axis=1)
            cause[ptp < FLAT_PTP_UV] = CAUSES.index("flat")
        elif self.window == 1:
            cause[block_ptp < FLAT_PTP_UV] = CAUSES.index("flat")
        if bmax.max() > MAX_ABS_UV or bmin.min() < -MAX_ABS_UV:
            cause[np.maximum(bmax, -bmin) > MAX_ABS_UV] = CAUSES.index("amplitude")
        if flags.any():
            fb = flags.reshape(-1, b)
            cause[(fb & FLAG_CLIPPED).any(axis=1)] = CAUSES.index("clipped")
            cause[(fb & FLAG_LEAD_OFF).any(axis=1)] = CAUSES.index("lead_off")
        return cause, QualityScan(all_max, all_min, self.window - 1)

    def _some_flat_group(self, all_max: np.ndarray, all_min: np.ndarray) -> bool:
        g = (self.window + 1) // 2
        m = all_max.size // g * g
        if m == 0:
            return True
        ptp = all_max[:m].reshape(-1, g).max(axis=1) - all_min[:m].reshape(-1, g).min(axis=1)
        return bool(ptp.min() < FLAT_PTP_UV)

    def commit(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        """Adopt a state given by :meth:`QualityScan.state`."""
        self.hist_max, self.hist_min = state


class QualityScan:
    """Per-block extremes of a peeked stretch, with the history before it."""

    def __init__(self, all_max: np.ndarray, all_min: np.ndarray, keep: int) -> None:
        self._max, self._min, self._keep = all_max, all_min, keep

    def state(self, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
        """State of the monitor after the first ``n_blocks`` blocks of the stretch."""
        k = self._keep
        return self._max[n_blocks : n_blocks + k].copy(), self._min[n_blocks : n_blocks + k].copy()

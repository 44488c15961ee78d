"""Sub-epoch states: REM onset and sleep onset, decided causally block by block.

The online stager decides 30-s epochs one epoch late; programs that act at a transition
(cue at the start of stable REM, stop helping once the sleeper is asleep) need to know
sooner. Both detectors here share the streaming API of :mod:`firmware.detectors`
(``scan(x, start)`` returns the :class:`StateEvent` decided in the samples, ``snapshot`` /
``restore`` copy the whole state) and decide once per DMA block, keyed on the absolute
sample index, inside a compiled loop: scanning in pieces of any whole number of blocks
gives exactly the events of one whole scan.

* :class:`RemOnsetDetector` -- the two AASM signs of REM a headband sees: rapid eye
  movements on the EOG (a fast step, slope above ``slope_uv_s`` after an 8-Hz low-pass;
  the slow rolling eye movements of drowsiness and frontal slow waves stay far below it)
  and chin atonia (the 1-s log RMS of the 15-Hz high-passed chin EMG, smoothed over
  ~10 s, below ``atonia_ratio`` times its running baseline outside REM, ~5 min; a recording
  made at a low rate is measured only up to its Nyquist frequency, see
  :meth:`RemOnsetDetector.limit_emg_band`). REM is *on* from
  the block where the chin is atonic and at least ``min_rems`` movements fell in the last
  ``window_s``, and *off* when the chin tone returns or no movement came for ``hold_s``
  (tonic REM has long quiet stretches). Without a chin channel the eye movements decide
  alone; without an EOG, atonia held for ``window_s``.
* :class:`SleepOnsetDetector` -- alpha dropout and theta rise at the wake -> N1
  transition (AASM N1 rule: alpha replaced by low-amplitude mixed 4-7 Hz activity):
  ``theta / (alpha + beta)`` power of the EEG, smoothed over 4 s. Beta is in the
  denominator so that eyes-open wake (alpha blocked, beta up) is not mistaken for N1.
  Asleep once the ratio has stayed above ``on_ratio`` for ``hold_s``; awake again once it
  has stayed below ``off_ratio`` as long.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numba
import numpy as np

from firmware.dsp import CYCLES_PER_SECTION_SAMPLE, CausalFilter, copy_state

logger = logging.getLogger(__name__)

__all__ = ["RemOnsetDetector", "SleepOnsetDetector", "StateEvent"]

#: Cycles per block of the state machine (compares, a log, two exponential averages).
STATE_CYCLES_PER_BLOCK = 120
#: Cycles per sample of the per-block reductions (a square or a slope and a compare).
REDUCE_CYCLES_PER_SAMPLE = 6
#: Chin tone is measured above this (Hz): below it the chin lead carries spindles, alpha,
#: the ECG and movement as much as muscle.
EMG_TONE_LOW_HZ = 15.0
#: Narrowest chin band (Hz) above :data:`EMG_TONE_LOW_HZ` that still measures a tone: a
#: recording whose Nyquist frequency is closer to 15 Hz holds no chin tone at all.
MIN_EMG_TONE_WIDTH_HZ = 5.0


@dataclass(frozen=True)
class StateEvent:
    """A sub-epoch state changed.

    Attributes
    ----------
    kind : str
        ``"rem_onset"``, ``"rem_end"``, ``"sleep_onset"`` or ``"wake"``.
    decision_index : int
        Last sample of the block in which the change was decided.
    value : float
        REM: eye movements in the last window (or -1 without EOG); sleep onset: the
        smoothed theta / (alpha + beta) ratio.
    """

    kind: str
    decision_index: int
    value: float


def _block_reduce(x: np.ndarray, block: int, op: str) -> np.ndarray:
    """Per-block max of ``|x|`` or mean of ``x**2`` (``x`` holds whole blocks)."""
    xb = x.reshape(-1, block)
    if op == "max":
        return np.abs(xb).max(axis=1)
    return np.mean(xb * xb, axis=1)


# REM state (float64): on, last REM index, ring position, tone, baseline, has tone,
# window sum, window fill, atonic since, ring[...]
_R_ON, _R_LAST, _R_POS, _R_TONE, _R_BASE, _R_HAS, _R_WSUM, _R_WFILL, _R_ATONIC0 = range(9)
_R_RING0 = 9
_RING = 32


@numba.njit(cache=True)
def _rem_loop(
    ends: np.ndarray,
    slope: np.ndarray,
    emg_ms: np.ndarray,
    has_eog: bool,
    has_emg: bool,
    st: np.ndarray,
    slope_thr: float,
    refractory: float,
    window: float,
    min_rems: int,
    hold: float,
    win_blocks: int,
    a_tone: float,
    a_base: float,
    log_ratio: float,
    log_back: float,
) -> np.ndarray:  # pragma: no cover
    """Per-block REM state machine; rows (block end, kind 1 on / 0 off, movements)."""
    out = np.empty((ends.shape[0], 3))
    n_out = 0
    for k in range(ends.shape[0]):
        e = ends[k]
        if has_eog and slope[k] > slope_thr and e - st[_R_LAST] > refractory:
            st[_R_LAST] = e
            pos = int(st[_R_POS])
            st[_R_RING0 + pos] = e
            st[_R_POS] = (pos + 1) % _RING
        if has_emg:
            st[_R_WSUM] += emg_ms[k]
            st[_R_WFILL] += 1
            if st[_R_WFILL] >= win_blocks:
                lr = 0.5 * math.log(st[_R_WSUM] / st[_R_WFILL] + 1e-6)
                st[_R_WSUM] = 0.0
                st[_R_WFILL] = 0.0
                if st[_R_HAS] == 0:
                    st[_R_TONE] = lr
                    st[_R_BASE] = lr
                    st[_R_HAS] = 1.0
                else:
                    st[_R_TONE] += a_tone * (lr - st[_R_TONE])
                    # The baseline follows the tone outside REM only: a long REM period
                    # must not become the reference it is compared with.
                    if st[_R_ON] == 0:
                        st[_R_BASE] += a_base * (st[_R_TONE] - st[_R_BASE])
        atonic = True
        if has_emg:
            thr = log_ratio if st[_R_ON] == 0 else log_back
            atonic = st[_R_HAS] > 0 and st[_R_TONE] < st[_R_BASE] + thr
        if atonic:
            if st[_R_ATONIC0] < 0:
                st[_R_ATONIC0] = e
        else:
            st[_R_ATONIC0] = -1.0
        n_rem = 0
        if has_eog:
            for j in range(_RING):
                t = st[_R_RING0 + j]
                if t >= 0 and e - t < window:
                    n_rem += 1
        if st[_R_ON] == 0:
            if has_eog:
                start = atonic and n_rem >= min_rems
            else:
                start = atonic and e - st[_R_ATONIC0] >= window
            if start:
                st[_R_ON] = 1.0
                out[n_out, 0] = e
                out[n_out, 1] = 1.0
                out[n_out, 2] = n_rem if has_eog else -1.0
                n_out += 1
        else:
            quiet = has_eog and e - st[_R_LAST] > hold
            if not atonic or quiet:
                st[_R_ON] = 0.0
                out[n_out, 0] = e
                out[n_out, 1] = 0.0
                out[n_out, 2] = n_rem if has_eog else -1.0
                n_out += 1
    return out[:n_out]


class RemOnsetDetector:
    """Causal REM onset: rapid eye movements on the EOG and chin atonia.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block (decisions at each block's last sample).
    has_eog, has_emg : bool
        Rows given to :meth:`scan`: EOG first, then chin EMG (at least one).
    slope_uv_s : float
        Slope of the 8-Hz low-passed EOG that counts as a rapid eye movement (µV/s).
    refractory_s : float
        One movement at most per this interval.
    window_s : float
        Movements are counted over this trailing window.
    min_rems : int
        Movements in the window needed (with atonia) for REM to begin.
    hold_s : float
        REM ends when no movement came for this long.
    atonia_ratio : float
        Atonic when the smoothed chin RMS is below this times its non-atonic baseline.
    tone_tau_s, baseline_tau_s : float
        Time constants of the smoothed chin RMS and of its baseline.
    emg_bandwidth_hz : float, optional
        Highest frequency the chin row holds (a recording made at a low rate and resampled
        up, :attr:`hal.base.SourceInfo.bandwidth_hz`); None: the full band. See
        :meth:`limit_emg_band`.
    """

    def __init__(
        self,
        sfreq: float,
        block: int,
        has_eog: bool = True,
        has_emg: bool = True,
        slope_uv_s: float = 1500.0,
        refractory_s: float = 0.3,
        window_s: float = 30.0,
        min_rems: int = 2,
        hold_s: float = 180.0,
        atonia_ratio: float = 0.55,
        tone_tau_s: float = 10.0,
        baseline_tau_s: float = 300.0,
        emg_bandwidth_hz: float | None = None,
    ) -> None:
        if not (has_eog or has_emg):
            raise ValueError("REM onset needs an EOG or a chin EMG row.")
        self.sfreq = float(sfreq)
        self.block = int(block)
        self.has_eog, self.has_emg = bool(has_eog), bool(has_emg)
        self.slope_uv_s = float(slope_uv_s)
        self.refractory = refractory_s * sfreq
        self.window = window_s * sfreq
        self.min_rems = int(min_rems)
        self.hold = hold_s * sfreq
        self.win_blocks = max(1, round(sfreq / block))  # ~1-s RMS windows
        win_s = self.win_blocks * block / sfreq
        self.a_tone = min(1.0, win_s / tone_tau_s)
        self.a_base = min(1.0, win_s / baseline_tau_s)
        self.log_ratio = math.log(atonia_ratio)
        # Hysteresis: once on, the tone must rise a little further before REM ends.
        self.log_back = math.log(min(0.95, atonia_ratio * 1.25))
        self.f_eog = CausalFilter((None, 8.0), sfreq) if has_eog else None
        self.f_emg = CausalFilter((EMG_TONE_LOW_HZ, None), sfreq) if has_emg else None
        #: The chin row is read for atonia (False when its recording holds no tone band).
        self.use_emg = self.has_emg
        self._prev_eog = 0.0
        self._st = np.full(_R_RING0 + _RING, -1.0)
        self._st[[_R_ON, _R_POS, _R_TONE, _R_BASE, _R_HAS, _R_WSUM, _R_WFILL]] = 0.0
        self._st[_R_LAST] = -1e12
        if emg_bandwidth_hz is not None:
            self.limit_emg_band(emg_bandwidth_hz)

    def limit_emg_band(self, bandwidth_hz: float | None) -> None:
        """Measure the chin tone only in the band the recording holds.

        A recording made at a low rate (DREAMS excerpt 3: 50 Hz) and resampled up to the
        device rate holds nothing of the chin above its Nyquist frequency, but the
        front end still adds its noise there: the 15-Hz high-passed RMS would then be
        mostly that noise, which atonia does not lower, and REM would be missed. The tone
        is measured in 15 Hz to ``bandwidth_hz`` instead (the same signs, and the same
        baseline ratio: atonia lowers the whole muscle band). A recording whose band ends
        less than :data:`MIN_EMG_TONE_WIDTH_HZ` above 15 Hz holds no chin tone: the chin
        row is then ignored with a warning and the eye movements decide alone. Call
        before the first :meth:`scan`.

        Parameters
        ----------
        bandwidth_hz : float or None
            Highest frequency the chin row holds; None, or at least the device's Nyquist
            frequency: the full band (nothing changes).

        Raises
        ------
        ValueError
            The chin holds no tone band and there is no EOG either: nothing shows REM.
        """
        if not self.has_emg or bandwidth_hz is None or bandwidth_hz >= self.sfreq / 2:
            return
        if bandwidth_hz < EMG_TONE_LOW_HZ + MIN_EMG_TONE_WIDTH_HZ:
            if not self.has_eog:
                raise ValueError(
                    f"REM onset needs an EOG or a chin EMG holding {EMG_TONE_LOW_HZ:g}-"
                    f"{EMG_TONE_LOW_HZ + MIN_EMG_TONE_WIDTH_HZ:g} Hz; the chin holds nothing "
                    f"above {bandwidth_hz:g} Hz."
                )
            logger.warning(
                "chin EMG holds nothing above %g Hz: no chin tone to judge REM atonia by "
                "(it is measured from %g Hz); REM onset from the eye movements alone",
                bandwidth_hz,
                EMG_TONE_LOW_HZ,
            )
            self.f_emg = None
            self.use_emg = False
            return
        self.f_emg = CausalFilter((EMG_TONE_LOW_HZ, float(bandwidth_hz)), self.sfreq)
        self.use_emg = True
        logger.info(
            "chin EMG holds nothing above %g Hz: REM atonia measured in %g-%g Hz",
            bandwidth_hz,
            EMG_TONE_LOW_HZ,
            bandwidth_hz,
        )

    @property
    def active(self) -> bool:
        """REM is on after the samples scanned so far."""
        return bool(self._st[_R_ON] > 0)

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: filters, reductions, the per-block state machine."""
        filt = sum(f.cycles_per_sample for f in (self.f_eog, self.f_emg) if f is not None)
        rows = int(self.has_eog) + int(self.use_emg)
        per_block = -(-STATE_CYCLES_PER_BLOCK // self.block)
        return filt + rows * REDUCE_CYCLES_PER_SAMPLE + per_block

    def scan_states(self, rows: np.ndarray, start: int) -> tuple[list[StateEvent], np.ndarray]:
        """Process whole blocks; return the events and the REM state at every block end.

        Parameters
        ----------
        rows : ndarray, shape (n_rows, n)
            EOG then chin EMG (µV), as given at construction; ``n`` whole blocks.
        start : int
            Absolute index of the first sample (a block boundary).

        Returns
        -------
        events : list of StateEvent
            ``rem_onset`` / ``rem_end`` decided in these samples.
        on : ndarray of bool, shape (n // block,)
            REM state after each block.
        """
        rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        n = rows.shape[1]
        nb = n // self.block
        slope = np.zeros(nb)
        emg_ms = np.zeros(nb)
        r = 0
        if self.f_eog is not None:
            y = self.f_eog.process(rows[r : r + 1])[0]
            d = np.diff(np.concatenate([[self._prev_eog], y])) * self.sfreq
            if n:
                self._prev_eog = float(y[-1])
            slope = _block_reduce(d, self.block, "max")
            r += 1
        if self.f_emg is not None:
            emg_ms = _block_reduce(self.f_emg.process(rows[r : r + 1])[0], self.block, "ms")
        ends = start + self.block - 1 + self.block * np.arange(nb, dtype=np.float64)
        rows_out = _rem_loop(
            ends,
            slope,
            emg_ms,
            self.has_eog,
            self.use_emg,
            self._st,
            self.slope_uv_s,
            self.refractory,
            self.window,
            self.min_rems,
            self.hold,
            self.win_blocks,
            self.a_tone,
            self.a_base,
            self.log_ratio,
            self.log_back,
        )
        events = [
            StateEvent("rem_onset" if r_[1] > 0 else "rem_end", int(r_[0]), float(r_[2]))
            for r_ in rows_out
        ]
        initial = not rows_out[0, 1] > 0 if len(rows_out) else self.active
        on = _state_after_blocks(ends, rows_out, initial)
        return events, on

    def scan(self, rows: np.ndarray, start: int) -> list[StateEvent]:
        """Process whole blocks; return the ``rem_onset`` / ``rem_end`` events."""
        return self.scan_states(rows, start)[0]

    def snapshot(self) -> object:
        """A copy of the full state."""
        zi = tuple(f.zi for f in (self.f_eog, self.f_emg) if f is not None)
        return copy_state((zi, self._prev_eog, self._st))

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        zi, self._prev_eog, self._st = copy_state(state)  # type: ignore[misc]
        for f, z in zip([f for f in (self.f_eog, self.f_emg) if f is not None], zi, strict=True):
            f.zi = z


def _state_after_blocks(ends: np.ndarray, changes: np.ndarray, initial: bool) -> np.ndarray:
    """Boolean state after each block from the initial state and the change rows."""
    on = np.full(ends.shape[0], initial)
    for row in changes:
        k = int(np.searchsorted(ends, row[0]))
        on[k:] = row[1] > 0
    return on


# Sleep-onset state (float64): asleep, since (block end the condition began or -1),
# theta, alpha, beta (smoothed powers), has powers.
_S_ASLEEP, _S_SINCE, _S_TH, _S_AL, _S_BE, _S_HAS = range(6)


@numba.njit(cache=True)
def _onset_loop(
    ends: np.ndarray,
    theta: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    st: np.ndarray,
    a: float,
    on_ratio: float,
    off_ratio: float,
    hold: float,
) -> np.ndarray:  # pragma: no cover
    """Per-block sleep-onset state machine; rows (block end, kind 1 asleep / 0 awake, ratio)."""
    out = np.empty((ends.shape[0], 3))
    n_out = 0
    for k in range(ends.shape[0]):
        e = ends[k]
        if st[_S_HAS] == 0:
            st[_S_TH], st[_S_AL], st[_S_BE] = theta[k], alpha[k], beta[k]
            st[_S_HAS] = 1.0
        else:
            st[_S_TH] += a * (theta[k] - st[_S_TH])
            st[_S_AL] += a * (alpha[k] - st[_S_AL])
            st[_S_BE] += a * (beta[k] - st[_S_BE])
        ratio = st[_S_TH] / (st[_S_AL] + st[_S_BE] + 1e-9)
        flip = ratio > on_ratio if st[_S_ASLEEP] == 0 else ratio < off_ratio
        if not flip:
            st[_S_SINCE] = -1.0
            continue
        if st[_S_SINCE] < 0:
            st[_S_SINCE] = e
        if e - st[_S_SINCE] >= hold:
            st[_S_ASLEEP] = 1.0 - st[_S_ASLEEP]
            st[_S_SINCE] = -1.0
            out[n_out, 0] = e
            out[n_out, 1] = st[_S_ASLEEP]
            out[n_out, 2] = ratio
            n_out += 1
    return out[:n_out]


class SleepOnsetDetector:
    """Causal sleep onset: alpha dropout and theta rise on one EEG channel.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    on_ratio, off_ratio : float
        ``theta / (alpha + beta)`` above which the sleeper is falling asleep, below which
        awake again (hysteresis).
    hold_s : float
        How long the ratio must stay past the threshold.
    tau_s : float
        Time constant of the smoothed band powers.
    """

    def __init__(
        self,
        sfreq: float,
        block: int,
        on_ratio: float = 0.9,
        off_ratio: float = 0.5,
        hold_s: float = 10.0,
        tau_s: float = 4.0,
    ) -> None:
        self.sfreq = float(sfreq)
        self.block = int(block)
        self.on_ratio, self.off_ratio = float(on_ratio), float(off_ratio)
        self.hold = hold_s * sfreq
        self.a = min(1.0, block / (tau_s * sfreq))
        self.filters = [
            CausalFilter(band, sfreq) for band in ((4.0, 8.0), (8.0, 12.0), (16.0, 30.0))
        ]
        self._st = np.array([0.0, -1.0, 0.0, 0.0, 0.0, 0.0])

    @property
    def asleep(self) -> bool:
        """Asleep after the samples scanned so far."""
        return bool(self._st[_S_ASLEEP] > 0)

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: three band-passes, three squares, the state machine."""
        filt = sum(f.n_sections for f in self.filters) * CYCLES_PER_SECTION_SAMPLE
        per_block = -(-STATE_CYCLES_PER_BLOCK // self.block)
        return filt + 3 * REDUCE_CYCLES_PER_SAMPLE + per_block

    def scan(self, x_uv: np.ndarray, start: int) -> list[StateEvent]:
        """Process whole blocks of EEG (µV); return ``sleep_onset`` / ``wake`` events."""
        x = np.asarray(x_uv, dtype=np.float64)[np.newaxis]
        nb = x.shape[1] // self.block
        powers = [_block_reduce(f.process(x)[0], self.block, "ms") for f in self.filters]
        ends = start + self.block - 1 + self.block * np.arange(nb, dtype=np.float64)
        rows = _onset_loop(
            ends, *powers, self._st, self.a, self.on_ratio, self.off_ratio, self.hold
        )
        return [
            StateEvent("sleep_onset" if r[1] > 0 else "wake", int(r[0]), float(r[2])) for r in rows
        ]

    def snapshot(self) -> object:
        """A copy of the full state."""
        return copy_state((tuple(f.zi for f in self.filters), self._st))

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        zi, self._st = copy_state(state)  # type: ignore[misc]
        for f, z in zip(self.filters, zi, strict=True):
            f.zi = z

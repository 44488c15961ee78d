"""Triggers: a simple causal slow-oscillation up-phase trigger, the spindle cue and the
nightmare guard (:class:`NightmareGuard`, escalating pulses while REM distress lasts).

The EEG is band-passed to 0.5-2 Hz (causal Butterworth, state carried). When the filtered
signal reaches a trough below the threshold (a real down-state) the trigger measures the
quarter period ``q`` from the preceding downward zero crossing (90°) to the trough (180°)
and predicts the positive peak (0°, the up-phase) two quarter periods after the trough.
This is the classic "adaptive" variant of Ngo et al. (2013)'s fixed 500-ms delay; the
phase-estimation issue replaces it with ECHT and a PLL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Cycles per sample: compare with the previous samples and the threshold.
CYCLES_PER_SAMPLE = 8


@dataclass(frozen=True)
class Candidate:
    """A trough that qualifies: when it was known and where the up-phase is predicted.

    Attributes
    ----------
    decision_index : int
        First sample at which the trough is known (the sample after it).
    trough_index : int
        Sample of the trough (180°).
    trough_uv : float
        Filtered value at the trough, µV (at or below the threshold).
    peak_index : int
        Predicted sample of the positive peak (0°): two quarter periods after the trough.
    """

    decision_index: int  # first sample at which the trough is known (trough + 1)
    trough_index: int
    trough_uv: float
    peak_index: int  # predicted positive peak (0°)


class UpPhaseTrigger:
    """Find qualifying troughs in a stream of slow-oscillation-band samples.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    threshold_uv : float
        The trough must be at or below this (negative) value, µV.

    Notes
    -----
    A trough qualifies when its quarter period (from the last downward zero crossing) is
    :attr:`MIN_QUARTER_S` to :attr:`MAX_QUARTER_S` seconds, i.e. a 0.5-2 Hz wave.
    """

    MIN_QUARTER_S = 0.125  # 2 Hz
    MAX_QUARTER_S = 0.5  # 0.5 Hz

    def __init__(self, sfreq: float, threshold_uv: float) -> None:
        self.sfreq = sfreq
        self.threshold_uv = threshold_uv
        self.prev = np.zeros(2)  # the last two samples seen
        self.last_zc_down = -(10**12)  # absolute index of the last downward zero crossing

    def peek(self, y: np.ndarray, start: int) -> tuple[list[Candidate], TriggerScan]:
        """Scan filtered samples ``y`` (absolute index of ``y[0]`` is ``start``).

        Nothing is committed: the caller adopts a state with :meth:`commit`.

        Parameters
        ----------
        y : ndarray, shape (n,)
            Band-passed EEG, µV, continuing the samples seen so far.
        start : int
            Absolute sample index of ``y[0]``.

        Returns
        -------
        candidates : list of Candidate
            The qualifying troughs, in order.
        scan : TriggerScan
            Gives the state after any prefix of ``y``.
        """
        yy = np.concatenate([self.prev, y])
        # Downward zero crossing at absolute index i: y[i-1] >= 0 > y[i].
        neg = yy < 0
        zc = np.flatnonzero(neg[2:] & ~neg[1:-1]) + start
        zc_all = np.concatenate([[self.last_zc_down], zc])
        out: list[Candidate] = []
        scan = TriggerScan(yy, zc_all, start)
        if yy.min() > self.threshold_uv:
            return out, scan  # no down-state deep enough: the common case in light sleep
        # Trough at i-1 confirmed at i: y[i-2] > y[i-1] <= y[i] and y[i-1] <= threshold.
        mid = yy[1:-1]
        is_min = (yy[:-2] > mid) & (mid <= yy[2:]) & (mid <= self.threshold_uv)
        troughs = np.flatnonzero(is_min) + start - 1
        if troughs.size:
            k = np.searchsorted(zc_all, troughs, side="right") - 1
            quarter = troughs - zc_all[k]
            lo, hi = self.MIN_QUARTER_S * self.sfreq, self.MAX_QUARTER_S * self.sfreq
            ok = (quarter >= lo) & (quarter <= hi)
            for t, q in zip(troughs[ok].tolist(), quarter[ok].tolist(), strict=True):
                out.append(Candidate(t + 1, t, float(yy[t - start + 2]), t + 2 * q))
        return out, scan

    def commit(self, state: tuple[np.ndarray, int]) -> None:
        """Adopt a state given by :meth:`TriggerScan.state`.

        Parameters
        ----------
        state : tuple
            ``(last two samples, index of the last downward zero crossing)``.
        """
        self.prev, self.last_zc_down = state


class TriggerScan:
    """What a peek saw, enough to give the trigger's state after any prefix.

    Parameters
    ----------
    yy : ndarray
        The two samples before the stretch, then the stretch.
    zc_all : ndarray of int
        The last downward zero crossing before the stretch, then those in it (absolute
        sample indices).
    start : int
        Absolute sample index of the stretch's first sample.
    """

    def __init__(self, yy: np.ndarray, zc_all: np.ndarray, start: int) -> None:
        self._yy, self._zc, self._start = yy, zc_all, start

    def state(self, n: int) -> tuple[np.ndarray, int]:
        """State after the first ``n`` samples of the scanned stretch.

        Parameters
        ----------
        n : int
            Samples consumed, 0 to the stretch's length.

        Returns
        -------
        tuple
            ``(last two samples, index of the last downward zero crossing)``, for
            :meth:`UpPhaseTrigger.commit`.
        """
        last = np.searchsorted(self._zc, self._start + n, side="left") - 1
        return self._yy[n : n + 2].copy(), int(self._zc[last])


class SimpleUpPhase:
    """The trough trigger behind the estimators' streaming API (``scan``/``snapshot``).

    Takes raw EEG (µV), band-passes it to 0.5-2 Hz itself, and returns
    :class:`firmware.phase.Candidate` objects like the phase estimators do.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    threshold_uv : float
        The trough must be at or below this, µV (negative).
    """

    name = "so-upphase"

    def __init__(self, sfreq: float, block: int, threshold_uv: float = -40.0) -> None:
        from firmware.dsp import CausalFilter

        self.sfreq = sfreq
        self.block = block
        self.filter = CausalFilter((0.5, 2.0), sfreq, order=2)
        self.trigger = UpPhaseTrigger(sfreq, threshold_uv)

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: the band-pass and the trough test."""
        return self.filter.cycles_per_sample + CYCLES_PER_SAMPLE

    def scan(self, x_uv: np.ndarray, start: int) -> list:
        """Process the next samples; return candidates as :mod:`firmware.phase` does.

        Parameters
        ----------
        x_uv : ndarray, shape (n,)
            Raw EEG, µV, continuing the samples seen so far.
        start : int
            Absolute sample index of ``x_uv[0]``.

        Returns
        -------
        list of firmware.phase.Candidate
            One per qualifying trough: decided the sample after it, targeting the predicted
            peak, with the trough's value, the wave's frequency and a phase of 180°.
        """
        from firmware.phase import Candidate as PhaseCandidate

        y = self.filter.process(x_uv[np.newaxis])[0]
        cands, scan = self.trigger.peek(y, start)
        self.trigger.commit(scan.state(y.size))
        return [
            PhaseCandidate(
                c.decision_index,
                c.peak_index,
                c.trough_uv,
                self.sfreq / (4 * max(1, (c.peak_index - c.trough_index) / 2)),
                180.0,
            )
            for c in cands
        ]

    def snapshot(self) -> object:
        """A copy of the full state.

        Returns
        -------
        object
            An opaque state for :meth:`restore`.
        """
        return (self.filter.zi.copy(), self.trigger.prev.copy(), self.trigger.last_zc_down)

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`.

        Parameters
        ----------
        state : object
            What :meth:`snapshot` returned.
        """
        zi, prev, last = state  # type: ignore[misc]
        self.filter.zi = zi.copy()
        self.trigger.prev = prev.copy()
        self.trigger.last_zc_down = last


class _DetectorState:
    """A trigger whose whole state is its ``detector``'s (snapshot and restore delegate)."""

    detector: Any  # a streaming detector of firmware.detectors or firmware.substates

    def snapshot(self) -> object:
        """A copy of the full state."""
        return self.detector.snapshot()

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        self.detector.restore(state)


class SpindleCue(_DetectorState):
    """Cue at a detected spindle (Portiloop-style).

    The detector's early decision, about 0.4 s into the spindle, becomes a candidate played
    as soon as the timer allows.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    output_latency_s : float
        The transducer's latency, seconds: the cue is timed to reach the ear right after
        the timer can fire.
    """

    name = "spindle"

    def __init__(self, sfreq: float, block: int, output_latency_s: float = 0.015) -> None:
        from firmware.detectors import SpindleDetector

        self.sfreq = sfreq
        self.block = block
        self.detector = SpindleDetector(sfreq, block)
        self.lead = int(np.ceil(output_latency_s * sfreq)) + 1

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample (the detector's)."""
        return int(self.detector.cycles_per_sample)

    def scan(self, x_uv: np.ndarray, start: int) -> list:
        """Process the next samples; one candidate per early spindle decision.

        Parameters
        ----------
        x_uv : ndarray, shape (n,)
            EEG, µV, continuing the samples seen so far.
        start : int
            Absolute sample index of ``x_uv[0]``.

        Returns
        -------
        list of firmware.phase.Candidate
            Targeting the ear one latency (plus a sample) after the deciding block ends;
            ``amplitude_uv`` is minus the spindle's amplitude, ``freq_hz`` its frequency.
        """
        from firmware.phase import Candidate as PhaseCandidate

        out = []
        for ev in self.detector.scan(x_uv, start):
            if ev.confirmed:
                continue
            block_end = (ev.decision_index // self.block + 1) * self.block
            out.append(
                PhaseCandidate(
                    ev.decision_index, block_end + self.lead, -ev.amplitude_uv, ev.freq_hz, 0.0
                )
            )
        return out


@dataclass(frozen=True)
class GuardCandidate:
    """A pulse the nightmare guard asks for: a phase Candidate's fields, episode, movement.

    Attributes
    ----------
    decision_index : int
        First sample at which the pulse is decided.
    target_index : int
        Sample at which the pulse should reach the sleeper.
    amplitude_uv : float
        Here: heart rate over its baseline, bpm.
    freq_hz : float
        Here: heart rate, Hz.
    phase_at_decision : float
        Always 0 (no phase).
    episode : int
        Decision sample of the distress onset (identifies the episode).
    moved_index : int
        Last sample with movement at the decision.
    """

    decision_index: int
    target_index: int
    amplitude_uv: float  # here: heart rate over baseline (bpm)
    freq_hz: float  # here: heart rate (Hz)
    phase_at_decision: float
    episode: int  # decision sample of the distress onset (identifies the episode)
    moved_index: int  # last sample with movement at the decision


class NightmareGuard(_DetectorState):
    """NightWare-style nightmare interruption: escalating pulses while REM distress lasts.

    A :class:`firmware.detectors.RemDistressDetector` watches ECG, chin EMG and movement.
    At its onset the guard offers a pulse, then one every ``period_s`` (rounded up to whole
    blocks) while distress lasts; when the heart has calmed it stops at once. The level of
    a pulse is :meth:`level_at`: ``start``, ``step`` higher every ``step_s`` from the
    episode's first pulse, never above ``top`` (the application counts from the first pulse
    it actually asked for, so the first one the sleeper feels is the gentle one). The
    pulses are timed to reach the sleeper right after the block that decided them.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    has_emg, has_accel : bool
        Rows the detector gets besides the ECG.
    start, step, top : float
        First level, increment per step and ceiling (the program's ``stimulus.level_db``),
        in the unit of ``stimulus.level_db`` (dB SPL for audio, percent for light and haptic).
    step_s : float
        Time per escalation step, seconds.
    period_s : float
        Time between pulses while distress lasts, seconds (the program's refractory
        period).
    output_latency_s : float
        The transducer's latency, seconds.
    """

    name = "rem-distress"

    def __init__(
        self,
        sfreq: float,
        block: int,
        has_emg: bool,
        has_accel: bool,
        start: float,
        step: float,
        top: float,
        step_s: float,
        period_s: float,
        output_latency_s: float = 0.02,
    ) -> None:
        from firmware.detectors import RemDistressDetector

        self.sfreq = sfreq
        self.block = block
        # A whole number of blocks between ticks: the pulses, timed from the end of the block
        # that decided them, then lie exactly one period apart (never inside the refractory).
        period = -(-round(period_s * sfreq) // block) * block
        self.detector = RemDistressDetector(
            sfreq, block, has_emg=has_emg, has_accel=has_accel, tick_s=period / sfreq
        )
        self.start, self.step, self.top = float(start), float(step), float(top)
        self.step_samples = max(1, round(step_s * sfreq))
        self.lead = int(np.ceil(output_latency_s * sfreq)) + 1

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample (the detector's; a pulse decision is modulation)."""
        return int(self.detector.cycles_per_sample)

    @property
    def in_distress(self) -> bool:
        """Distress is on after the samples scanned so far."""
        return self.detector.in_distress

    @property
    def last_movement_index(self) -> int:
        """Last sample with movement among those scanned."""
        return self.detector.last_movement_index

    def level_at(self, first_index: int, index: int) -> tuple[float, int]:
        """Level and step of a pulse in an escalating episode.

        Parameters
        ----------
        first_index : int
            Decision sample of the episode's first pulse.
        index : int
            Decision sample of this pulse.

        Returns
        -------
        level : float
            ``start + step * k``, at most ``top``.
        k : int
            The escalation step (0 for the first pulse's step).
        """
        k = max(0, index - first_index) // self.step_samples
        return min(self.start + k * self.step, self.top), int(k)

    def scan(self, rows: np.ndarray, start: int) -> list[GuardCandidate]:
        """Process the next samples (rows ECG[, EMG][, accel]); one candidate per pulse.

        Parameters
        ----------
        rows : ndarray, shape (n_rows, n)
            ECG, then chin EMG and accelerometer when the guard has them.
        start : int
            Absolute sample index of the first column.

        Returns
        -------
        list of GuardCandidate
            One per distress onset and tick (none at the distress's end).
        """
        out = []
        for ev in self.detector.scan(rows, start):
            if ev.kind == "end":
                continue
            block_end = (ev.decision_index // self.block + 1) * self.block
            out.append(
                GuardCandidate(
                    ev.decision_index,
                    block_end + self.lead,
                    ev.rise_bpm,
                    ev.hr_bpm / 60.0,
                    0.0,
                    ev.onset_index,
                    ev.moved_index,
                )
            )
        return out


class RemCue(_DetectorState):
    """Cue in REM (Dreamento-style lucid-dream induction).

    Offers a cue every ``tick_s`` while :class:`firmware.substates.RemOnsetDetector` says
    REM is on (rapid eye movements with chin atonia). The application turns the offers into
    trains with pauses, holds them after arousals and caps them per REM period. The cues
    are timed to reach the sleeper right after the block that decided them.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    has_eog, has_emg : bool
        Rows given to :meth:`scan`: EOG first, then chin EMG (at least one).
    tick_s : float
        Time between offers while REM is on, seconds (rounded to whole blocks, on absolute
        block numbers so that any chunking gives the same offers).
    output_latency_s : float
        The transducer's latency, seconds.

    Attributes
    ----------
    events : list
        The detector's state events of the last :meth:`scan` (the application logs them).
    """

    name = "rem-cue"

    def __init__(
        self,
        sfreq: float,
        block: int,
        has_eog: bool = True,
        has_emg: bool = True,
        tick_s: float = 0.5,
        output_latency_s: float = 0.015,
    ) -> None:
        from firmware.substates import RemOnsetDetector

        self.sfreq = sfreq
        self.block = block
        self.detector = RemOnsetDetector(sfreq, block, has_eog=has_eog, has_emg=has_emg)
        self.tick_blocks = max(1, round(tick_s * sfreq / block))
        self.lead = int(np.ceil(output_latency_s * sfreq)) + 1
        self.events: list = []  # state events of the last scan (the app logs them)

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample (the detector's; a cue decision is modulation)."""
        return int(self.detector.cycles_per_sample)

    def scan(self, rows: np.ndarray, start: int) -> list:
        """Process the next whole blocks (rows EOG[, EMG]); one offer per tick in REM.

        Parameters
        ----------
        rows : ndarray, shape (n_rows, n)
            EOG and chin EMG (µV), as given by ``has_eog`` and ``has_emg``.
        start : int
            Absolute sample index of the first column.

        Returns
        -------
        list of firmware.phase.Candidate
            Decided at the last sample of a block in REM on a tick, targeting the ear one
            latency (plus a sample) after it.
        """
        from firmware.phase import Candidate as PhaseCandidate

        self.events, on = self.detector.scan_states(rows, start)
        first_block = start // self.block
        ticks = np.flatnonzero(on & ((first_block + np.arange(on.size)) % self.tick_blocks == 0))
        out = []
        for k in ticks.tolist():
            end = start + (k + 1) * self.block  # the first sample after the deciding block
            out.append(PhaseCandidate(end - 1, end + self.lead, 0.0, 0.0, 0.0))
        return out


class AlphaPhaseCue:
    """Sound pulses locked to a phase of the alpha rhythm (the ``onset`` program).

    Elemind's sleep-onset headband plays pulses locked to the alpha phase while the wearer
    falls asleep. The alpha phase is estimated causally by the endpoint-corrected Hilbert
    transform (:class:`firmware.phase.EchtEstimator`, Schreglmann et al. 2021) with an
    8-12 Hz response over a 0.5-s window, once per DMA block; the frequency comes from the
    phase advance since the previous block. A block with alpha above ``min_amplitude_uv``
    offers a pulse when the predicted phase reaches ``target_deg`` within one block after
    the timer can fire (the application keeps the refractory period).
    :class:`firmware.substates.SleepOnsetDetector` runs beside it; its events are logged.
    So does a :class:`firmware.detectors.SpindleDetector`: the first spindle after the
    sleep-onset detector has called the sleeper asleep is the sign of N2 (AASM: N2 begins
    with a spindle or K-complex), and the pulses stop for good there, logged as an
    ``n2_sign`` state event -- before the stager, which decides each epoch one epoch late,
    can say N2.

    Lying awake, people move. No pulse is offered for ``quiet_s`` after a block with
    movement (accelerometer beyond ``ACTIVE_G``) or a chin burst (10-Hz high-passed
    EMG RMS beyond ``ACTIVE_EMG_UV``): the safety island counts such activity under
    stimulation as arousal attempts (three in 2 min: a trapped sleeper), with thresholds
    (0.05 g, 80 µV) above these, so the trigger stops before the island would notice.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    target_deg : float
        Alpha phase to hit at the ear (0° = positive peak of the alpha wave).
    min_amplitude_uv : float
        Analytic amplitude of alpha needed for a pulse (no alpha, no phase to lock to).
    output_latency_s : float
        The transducer's latency, seconds, compensated.
    has_emg, has_accel : bool
        Rows given to :meth:`scan` after the EEG: chin EMG, then accelerometer (g).
    quiet_s : float
        No pulse this long after movement or a chin burst, seconds.

    Attributes
    ----------
    events : list
        State events of the last :meth:`scan`: the sleep-onset detector's and ``n2_sign``.
    n2_at : int or None
        Decision sample of the N2 sign; no pulse from there on.
    """

    name = "alpha-phase"
    BAND = (8.0, 12.0)
    WINDOW_S = 0.5
    ACTIVE_G = 0.03
    ACTIVE_EMG_UV = 50.0

    def __init__(
        self,
        sfreq: float,
        block: int,
        target_deg: float = 0.0,
        min_amplitude_uv: float = 6.0,
        output_latency_s: float = 0.015,
        has_emg: bool = False,
        has_accel: bool = False,
        quiet_s: float = 61.0,
    ) -> None:
        from firmware.detectors import SpindleDetector
        from firmware.dsp import CausalFilter
        from firmware.phase import EchtEstimator
        from firmware.substates import SleepOnsetDetector

        self.sfreq = sfreq
        self.block = block
        self.echt = EchtEstimator(sfreq, block, window_s=self.WINDOW_S, band=self.BAND)
        self.onset = SleepOnsetDetector(sfreq, block)
        self.spindles = SpindleDetector(sfreq, block)
        self.n2_at: int | None = None  # decision sample of the N2 sign (then: done)
        self.target = float(np.radians(target_deg))
        self.min_amplitude_uv = float(min_amplitude_uv)
        self.latency = output_latency_s * sfreq
        self._prev_phase = np.nan  # phase at the previous block end
        self._first: int | None = None
        self.events: list = []
        self.has_emg, self.has_accel = bool(has_emg), bool(has_accel)
        self.f_emg = CausalFilter((10.0, None), sfreq) if has_emg else None
        self.quiet = round(quiet_s * sfreq)
        self._last_active = -(10**12)  # last sample of a block with activity

    @property
    def cycles_per_block(self) -> int:
        """Declared MCU cost per DMA block: ECHT, detectors, activity tests and prediction.

        The ECHT dot product, the sleep-onset and spindle detectors, the EMG filter and the
        activity comparisons, and the prediction (one atan2, one division).
        """
        from firmware.phase import CYCLES_PER_TRIG

        activity = 0 if self.f_emg is None else self.f_emg.cycles_per_sample * self.block
        activity += (int(self.has_emg) + int(self.has_accel)) * 2 * self.block
        return (
            self.echt.cycles_per_block
            + int(self.onset.cycles_per_sample + self.spindles.cycles_per_sample) * self.block
            + CYCLES_PER_TRIG
            + activity
        )

    def _active_ends(self, rows: np.ndarray, nb: int, start: int) -> np.ndarray:
        """Per block: the last block end with activity at or before it (or far past)."""
        act = np.zeros(nb, bool)
        r = 1
        if self.f_emg is not None:
            y = self.f_emg.process(rows[r : r + 1])[0][: nb * self.block]
            act |= np.mean((y * y).reshape(nb, self.block), axis=1) > self.ACTIVE_EMG_UV**2
            r += 1
        if self.has_accel:
            acc = np.abs(rows[r, : nb * self.block]).reshape(nb, self.block)
            act |= acc.max(axis=1) > self.ACTIVE_G
        ends = start + self.block - 1 + self.block * np.arange(nb, dtype=np.int64)
        last = np.maximum.accumulate(np.where(act, ends, self._last_active))
        if nb:
            self._last_active = int(last[-1])
        return last

    def scan(self, rows: np.ndarray, start: int) -> list:
        """Process the next whole blocks: EEG (µV)[, chin EMG (µV)][, accel (g)].

        Parameters
        ----------
        rows : ndarray, shape (n_rows, n)
            EEG first, then chin EMG and accelerometer as given by ``has_emg`` and
            ``has_accel``.
        start : int
            Absolute sample index of the first column.

        Returns
        -------
        list of firmware.phase.Candidate
            One offer per block with alpha whose predicted target phase falls in the next
            block, none within ``quiet_s`` after activity nor after the N2 sign.
        """
        from firmware.phase import Candidate as PhaseCandidate

        rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        x = np.ascontiguousarray(rows[0])
        last_active = self._active_ends(rows, x.size // self.block, start)
        if self._first is None:
            self._first = start
        ends, z = self.echt.analytic(x, start)
        self.echt.scan(x, start)  # advances the window history (its own decisions unused)
        asleep_before = self.onset.asleep
        self.events = self.onset.scan(x, start)
        self._n2_sign(x, start, asleep_before)
        out = []
        if ends.size == 0:
            return out
        phase = np.angle(z)
        amp = np.abs(z)
        prev = np.concatenate([[self._prev_phase], phase[:-1]])
        self._prev_phase = float(phase[-1])
        # Phase advance over one block, wrapped to [0, 2pi): alpha moves ~0.3 cycle a block.
        adv = np.mod(phase - prev, 2 * np.pi)
        freq = adv * self.sfreq / (2 * np.pi * self.block)
        valid = (ends >= self._first + self.echt.n - 1) & np.isfinite(freq)
        ok = valid & (amp >= self.min_amplitude_uv) & (freq >= 7.0) & (freq <= 14.0)
        # Block ends come one per block from the first: ``ends[k]`` is block ``k``'s.
        ok &= ends - last_active[: ends.size] >= self.quiet
        if self.n2_at is not None:
            ok &= ends < self.n2_at
        for k in np.flatnonzero(ok).tolist():
            e, f = int(ends[k]), float(freq[k])
            period = self.sfreq / f
            # The timer must fire after this block has been processed; and the prediction
            # is only trusted one block ahead (alpha keeps its phase for a few cycles only:
            # on the virtual sleeper the phase-locking value falls from 0.65 at 6 samples
            # ahead to 0.44 at 20 and 0.18 at 40), so a later block takes farther targets.
            wait = np.mod(self.target - phase[k], 2 * np.pi) / (2 * np.pi) * period
            if wait - self.latency <= 1.0:
                wait += period
            if wait - self.latency > 1.0 + self.block:
                continue
            out.append(
                PhaseCandidate(
                    e, e + int(np.floor(wait + 0.5)), float(amp[k]), f, float(np.degrees(phase[k]))
                )
            )
        return out

    def _n2_sign(self, x: np.ndarray, start: int, asleep_before: bool) -> None:
        """Look for the first spindle decided while the sleeper was asleep."""
        from firmware.substates import StateEvent

        spindles = self.spindles.scan(x, start)
        if self.n2_at is not None:
            return
        # The asleep state at each moment of this stretch, from the onset events.
        changes = [(e.decision_index, e.kind == "sleep_onset") for e in self.events]
        for sp in spindles:
            asleep = asleep_before
            for idx, state in changes:
                if idx <= sp.decision_index:
                    asleep = state
            if asleep:
                self.n2_at = sp.decision_index
                self.events = sorted(
                    [*self.events, StateEvent("n2_sign", sp.decision_index, sp.amplitude_uv)],
                    key=lambda e: e.decision_index,
                )
                return

    def snapshot(self) -> object:
        """A copy of the full state.

        Returns
        -------
        object
            An opaque state for :meth:`restore`.
        """
        zi = None if self.f_emg is None else self.f_emg.zi.copy()
        return (
            self.echt.snapshot(),
            self.onset.snapshot(),
            self._prev_phase,
            self._first,
            zi,
            self._last_active,
            self.spindles.snapshot(),
            self.n2_at,
        )

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`.

        Parameters
        ----------
        state : object
            What :meth:`snapshot` returned.
        """
        echt, onset, self._prev_phase, self._first, zi, self._last_active, sp, self.n2_at = state  # type: ignore[misc]
        self.spindles.restore(sp)
        self.echt.restore(echt)
        self.onset.restore(onset)
        if self.f_emg is not None:
            self.f_emg.zi = zi.copy()

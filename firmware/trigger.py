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

import numpy as np

#: Cycles per sample: compare with the previous samples and the threshold.
CYCLES_PER_SAMPLE = 8


@dataclass(frozen=True)
class Candidate:
    """A trough that qualifies: when it was known and where the up-phase is predicted."""

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
        The trough must be at or below this (negative) value.
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

        Returns the qualifying candidates in order, and a scan that gives the state after
        any prefix of ``y``.
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
        """Adopt a state given by :meth:`TriggerScan.state`."""
        self.prev, self.last_zc_down = state


class TriggerScan:
    """What a peek saw, enough to give the trigger's state after any prefix."""

    def __init__(self, yy: np.ndarray, zc_all: np.ndarray, start: int) -> None:
        self._yy, self._zc, self._start = yy, zc_all, start

    def state(self, n: int) -> tuple[np.ndarray, int]:
        """State after the first ``n`` samples of the scanned stretch."""
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
        The trough must be at or below this.
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
        """Process the next samples; return candidates as :mod:`firmware.phase` does."""
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
        """A copy of the full state."""
        return (self.filter.zi.copy(), self.trigger.prev.copy(), self.trigger.last_zc_down)

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        zi, prev, last = state  # type: ignore[misc]
        self.filter.zi = zi.copy()
        self.trigger.prev = prev.copy()
        self.trigger.last_zc_down = last


class SpindleCue:
    """Cue at a detected spindle (Portiloop-style): the detector's early decision, about
    0.4 s into the spindle, becomes a candidate played as soon as the timer allows.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    output_latency_s : float
        The transducer's latency: the cue is timed to reach the ear right after the timer
        can fire.
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
        """Process the next samples; one candidate per early spindle decision."""
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

    def snapshot(self) -> object:
        """A copy of the full state."""
        return self.detector.snapshot()

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        self.detector.restore(state)


@dataclass(frozen=True)
class GuardCandidate:
    """A haptic pulse the nightmare guard asks for (the phase estimators' Candidate
    fields, plus the pulse's level)."""

    decision_index: int
    target_index: int
    amplitude_uv: float  # here: heart rate over baseline (bpm)
    freq_hz: float  # here: heart rate (Hz)
    phase_at_decision: float
    episode: int  # decision sample of the distress onset (identifies the episode)
    moved_index: int  # last sample with movement at the decision


class NightmareGuard:
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
        First level, increment per step and ceiling (the program's ``stimulus.level_db``).
    step_s : float
        Time per escalation step.
    period_s : float
        Time between pulses while distress lasts (the program's refractory period).
    output_latency_s : float
        The transducer's latency.
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
        """Process the next samples (rows ECG[, EMG][, accel]); one candidate per pulse."""
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

    def snapshot(self) -> object:
        """A copy of the full state."""
        return self.detector.snapshot()

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        self.detector.restore(state)

"""The application firmware: the task set that turns blocks of samples into decisions.

On the device, every DMA block runs acquisition, dsp, quality and the trigger (modulation
task); every completed 30-s epoch runs the stager. This class is that task set written so
that many blocks can be processed in one call with exactly the block-by-block result:

* all state (filters, trigger, quality, stager buffers) is carried between calls;
* :meth:`Application.process` stops before the block in which a requested stimulus begins,
  because the stimulus may change the world (the sleeper reacts) and the samples from its
  onset on must be read again once it has been played (or refused).

The application only *requests* stimuli; the interlock in ``hal`` decides whether they
reach a transducer. Nothing here imports ``sim``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from firmware import quality
from firmware.detectors import ArousalDetector, Event
from firmware.phase import Candidate, make_estimator
from firmware.program import Escalation, Gate, Program, TriggerSpec
from firmware.stager import EpochDecision
from firmware.staging import MIN_SFREQ, OnlineStager
from firmware.trigger import (
    AlphaPhaseCue,
    GuardCandidate,
    NightmareGuard,
    RemCue,
    SimpleUpPhase,
    SpindleCue,
)
from hal.base import SourceInfo, UserInputError

logger = logging.getLogger(__name__)

#: Acquisition ISR: fixed entry/exit and DMA re-arm, plus a SPI read and sign extension
#: of one 24-bit code per channel-sample.
ACQ_CYCLES_PER_BLOCK = 400
ACQ_CYCLES_PER_CHANNEL_SAMPLE = 40
#: A modulation decision (gate checks, onset prediction, timer programming).
MODULATION_CYCLES = 3_000
#: Stimulation is withheld this long after bad signal ends.
BAD_SIGNAL_HOLDOFF_S = 5.0
#: The nightmare guard waits until movement has been still this long (the safety island
#: still counts activity 2 s apart as one arousal).
GUARD_SETTLE_S = 3.0
#: Chin EMG is used for arousals only when it holds frequencies up to this (Hz): the 10-Hz
#: high-passed band must reach past the spindle and alpha bands (AASM asks for EMG sampled
#: at 200 Hz; a 50-Hz recording keeps 10-25 Hz, mostly EEG and ECG crosstalk).
MIN_EMG_BANDWIDTH_HZ = 30.0


def check_device_rate(sfreq: float) -> None:
    """Raise :class:`UserInputError` unless the firmware can run at ``sfreq`` Hz.

    The device rate is the ADC's output data rate, a whole number of Hz (OpenBCI boards
    run at 250 Hz): a 30-s epoch is then exactly ``30 * sfreq`` samples. At a rate such as
    250.3 Hz no whole number of samples lasts 30 s, so every epoch would be a little off
    and drift against the recording's clock. The rate must also be at least
    :data:`firmware.staging.MIN_SFREQ`, below which the stager's features do not exist.

    Parameters
    ----------
    sfreq : float
        The device rate in Hz.

    Raises
    ------
    UserInputError
        A non-integer rate, or one below the stager's minimum (one line: what was
        expected, what came).
    """
    try:
        rate = float(sfreq)
    except (TypeError, ValueError):
        rate = math.nan
    if not math.isfinite(rate) or rate != math.floor(rate):
        raise UserInputError(
            f"Invalid device rate (sfreq): expected a whole number of Hz (an ADC samples at "
            f"an integer rate, and a 30-s epoch must be a whole number of samples), "
            f"got {sfreq!r}."
        )
    if rate < MIN_SFREQ:
        raise UserInputError(
            f"Invalid device rate (sfreq): expected at least {MIN_SFREQ:g} Hz (the sleep "
            f"stager's features reach 24 Hz), got {rate:g} Hz."
        )


def make_trigger(
    spec: TriggerSpec,
    sfreq: float,
    block: int,
    output_latency_s: float = 0.015,
    escalation: Escalation | None = None,
    top_level: float = 50.0,
    has_emg: bool = True,
    has_accel: bool = True,
    has_eog: bool = True,
    quiet_s: float = 61.0,
):
    """Build the program's trigger.

    Parameters
    ----------
    spec : TriggerSpec
        The program's trigger table.
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    output_latency_s : float
        The transducer's latency, compensated when timing a cue.
    escalation : Escalation or None
        The nightmare guard's escalation (``rem-distress`` only; None: constant level).
    top_level : float
        The guard's ceiling (the program's ``stimulus.level_db``).
    has_emg, has_accel : bool
        The guard's detector gets these rows besides the ECG.
    has_eog : bool
        ``rem-cue`` only: its REM detector gets an EOG row (and a chin row if ``has_emg``).
    quiet_s : float
        ``alpha-phase`` only: no pulse this long after movement or a chin burst (the
        program's ``gate.pause_after_arousal_s``).

    Returns
    -------
    object
        A phase estimator, the trough trigger, a spindle cue, the nightmare guard, the
        REM cue or the alpha-phase cue.
    """
    if spec.kind == "rem-cue":
        return RemCue(
            sfreq, block, has_eog=has_eog, has_emg=has_emg, output_latency_s=output_latency_s
        )
    if spec.kind == "alpha-phase":
        return AlphaPhaseCue(
            sfreq,
            block,
            target_deg=spec.target_deg,
            min_amplitude_uv=spec.min_amplitude_uv,
            output_latency_s=output_latency_s,
            has_emg=has_emg,
            has_accel=has_accel,
            quiet_s=quiet_s,
        )
    if spec.kind == "spindle":
        return SpindleCue(sfreq, block, output_latency_s)
    if spec.kind == "rem-distress":
        esc = escalation or Escalation()
        return NightmareGuard(
            sfreq,
            block,
            has_emg=has_emg,
            has_accel=has_accel,
            start=top_level if esc.start is None else esc.start,
            step=esc.step,
            top=top_level,
            step_s=esc.step_s,
            period_s=spec.refractory_s,
            output_latency_s=output_latency_s,
        )
    options = {} if spec.threshold_uv is None else {"threshold_uv": spec.threshold_uv}
    if spec.kind == "so-upphase":
        return SimpleUpPhase(sfreq, block, **options)
    return make_estimator(spec.kind, sfreq=sfreq, block=block, **options)


def trigger_cycles_per_block(trig, block: int) -> int:
    """Declared MCU cost of the trigger per DMA block."""
    per_block = getattr(trig, "cycles_per_block", None)
    if per_block is not None:
        return int(per_block)
    return int(trig.cycles_per_sample) * block


@dataclass(frozen=True)
class StimRequest:
    """The program asks for a stimulus (the interlock decides)."""

    decision_index: int
    onset_index: int  # sample at which the stimulus should reach the sleeper
    reason: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StageDecision:
    """An epoch was staged; known at ``decision_index`` (end of the block)."""

    decision_index: int
    decision: EpochDecision


@dataclass
class ChunkResult:
    """What one call to :meth:`Application.process` produced."""

    n_consumed: int
    stims: list[StimRequest]
    stages: list[StageDecision]
    logs: list[dict]


class ArousalPause:
    """When arousals hold stimulation back.

    From the first sign of an arousal (the detector's early event) until it has ended
    (its completed event) and ``gate.pause_after_arousal_s`` more. An arousal that begins
    within ``gate.repeat_window_s`` of the previous one pauses ``gate.repeat_pause_s``
    instead: a sleeper who keeps waking under the sound is left alone for a while, not
    poked every few seconds (the safety island trips on that pattern — the trapped
    sleeper — and the application should never be the one that gets there).

    Parameters
    ----------
    gate : Gate
        The program's gate.
    sfreq : float
        Sampling rate in Hz (the state is kept in sample indices).
    ignore : tuple of str
        Arousal events whose signs are exactly one of these are ignored (``onset``:
        ``("eeg",)``; awake, alpha and beta are the sleeper's normal state, not an
        arousal; movement and chin bursts still hold).
    brief : tuple of str
        An arousal shorter than 3 s whose completed event shows only these signs holds
        while it lasts but leaves no pause after it and is no repeat (``rem-cue``:
        ``("emg",)``; a short chin burst alone in REM is a phasic twitch; the AASM's
        arousals last 3 s at least, and those still pause).
    """

    #: Shortest arousal (AASM): a shorter ``brief`` one is a twitch.
    MIN_AROUSAL_S = 3.0

    def __init__(
        self,
        gate: Gate,
        sfreq: float,
        ignore: tuple[str, ...] = (),
        brief: tuple[str, ...] = (),
    ) -> None:
        self.pause = round(gate.pause_after_arousal_s * sfreq)
        self.repeat_window = round(gate.repeat_window_s * sfreq)
        self.repeat_pause = round(gate.repeat_pause_s * sfreq)
        self.in_arousal = False
        self.waking = False  # the arousal in progress began with an EEG shift or movement
        self.until = -(10**12)
        self.last_onset = -(10**12)  # decision index of the previous arousal's first sign
        self.repeated = False
        self.ignore = ignore
        self.brief = brief
        self._pending = -(10**12)  # first sign of the arousal in progress
        self.min_len = round(self.MIN_AROUSAL_S * sfreq)

    def apply(self, ev: Event) -> None:
        """Take in one arousal event (in order of decision)."""
        if ev.source in self.ignore:
            return
        if not ev.confirmed:
            # An EEG shift or movement is the sleeper waking; a chin-EMG sign alone may be
            # REM muscle activity (a nightmare's tone and twitches).
            self.waking = "eeg" in ev.source or "movement" in ev.source
            self._pending = ev.decision_index
            self.in_arousal = True
            return
        self.in_arousal = False
        if ev.source in self.brief and ev.end_index - ev.onset_index < self.min_len:
            return
        # Whether it repeats the previous one is judged from its first sign.
        self.repeated = self._pending - self.last_onset < self.repeat_window
        self.last_onset = self._pending
        pause = max(self.pause, self.repeat_pause) if self.repeated else self.pause
        self.until = max(self.until, ev.decision_index + pause)

    def holds(self, index: int) -> bool:
        """Stimulation is held back at sample ``index``."""
        return self.in_arousal or index < self.until


def _emg_bandwidth(info: SourceInfo, row_emg: int | None) -> float | None:
    """Highest frequency the chin lead holds (None: the full band).

    A source that gives each channel its band (an EDF stores each signal at its own
    rate: a slow ECG says nothing of the chin) is taken at its word, None included;
    one that gives only the band of all its channels bounds the chin with it.
    """
    if row_emg is None:
        return None
    if any(c.bandwidth_hz is not None for c in info.channels):
        return info.channels[row_emg].bandwidth_hz
    return info.bandwidth_hz


class Application:
    """The flashable application: dsp, quality, trigger, stager and program.

    Parameters
    ----------
    program : Program
        The validated modulation program.
    info : SourceInfo
        The board's channels and rate (a whole number of Hz, see
        :func:`check_device_rate`).
    block : int
        Samples per DMA block.
    output_latency_s : float
        The transducer's output latency, compensated when scheduling.

    Raises
    ------
    UserInputError
        A device rate the firmware cannot run at, a channel the program needs missing.
    """

    def __init__(
        self, program: Program, info: SourceInfo, block: int, output_latency_s: float
    ) -> None:
        eeg = info.picks("eeg")
        if not eeg:
            raise UserInputError(
                f"The source has no EEG channel: expected at least one channel with role "
                f"'eeg', got roles {[c.role for c in info.channels]}."
            )
        check_device_rate(info.sfreq)
        self.program = program
        self.sfreq = info.sfreq
        self.block = block
        self.row_eeg = eeg[0]
        self.rows_eeg = eeg
        self.row_eog = (info.picks("eog") or [None])[0]
        self.row_emg = (info.picks("emg") or [None])[0]
        self.n_channels = len(info.channels)
        self.latency_samples = output_latency_s * self.sfreq
        self.quality = quality.QualityMonitor(self.sfreq, block)
        self.row_accel = (info.picks("accel") or [None])[0]
        # The nightmare guard reads the heart (and chin, movement), not the EEG.
        self.guard = program.trigger.kind == "rem-distress"
        self._trigger_rows: list[int] = [self.row_eeg]
        if self.guard:
            row_ecg = (info.picks("ecg") or [None])[0]
            if row_ecg is None:
                raise UserInputError(
                    f"Program '{program.name}' (trigger.kind = 'rem-distress') needs an ECG "
                    f"channel (role 'ecg'), got roles {[c.role for c in info.channels]}."
                )
            self._trigger_rows = [
                r for r in (row_ecg, self.row_emg, self.row_accel) if r is not None
            ]
        # The REM cue reads the eyes and the chin (REM onset: eye movements with atonia).
        self.rem_cue = program.trigger.kind == "rem-cue"
        if self.rem_cue:
            self._trigger_rows = [r for r in (self.row_eog, self.row_emg) if r is not None]
            if not self._trigger_rows:
                raise UserInputError(
                    f"Program '{program.name}' (trigger.kind = 'rem-cue') needs an EOG "
                    f"(role 'eog') or chin EMG (role 'emg') channel to see REM, got roles "
                    f"{[c.role for c in info.channels]}."
                )
        # The onset pulses read the EEG, and the chin and movement to keep quiet after them.
        if program.trigger.kind == "alpha-phase":
            self._trigger_rows = [
                r for r in (self.row_eeg, self.row_emg, self.row_accel) if r is not None
            ]
        self._multirow = self.guard or self.rem_cue or program.trigger.kind == "alpha-phase"
        try:
            self.trigger = make_trigger(
                program.trigger,
                self.sfreq,
                block,
                output_latency_s,
                escalation=program.escalation,
                top_level=program.stimulus.level_db,
                has_emg=self.row_emg is not None,
                has_accel=self.row_accel is not None,
                has_eog=self.row_eog is not None,
                quiet_s=program.gate.pause_after_arousal_s,
            )
        except UserInputError:
            raise
        except ValueError as err:
            # The program was validated: what its trigger refuses is the rate (a band
            # edge at or above the Nyquist frequency, e.g. 16-30 Hz at 60 Hz).
            raise UserInputError(
                f"Program {program.name!r} (trigger.kind = {program.trigger.kind!r}) cannot "
                f"run at a device rate of {self.sfreq:g} Hz: {err}"
            ) from err
        emg_band = _emg_bandwidth(info, self.row_emg)
        if self.rem_cue:
            # Atonia is judged on the chin band the recording holds (firmware.substates).
            try:
                self.trigger.detector.limit_emg_band(emg_band)
            except ValueError as err:
                raise UserInputError(f"Program {program.name!r} cannot run here: {err}") from err
        # Chin EMG is muscle activity above the EEG's bands; a recording made at a low rate
        # keeps only 10 Hz to its Nyquist frequency of it, where spindles, alpha and the
        # heart leak into the chin lead and read as bursts: arousals all night long.
        row_arousal_emg = self.row_emg
        if self.row_emg is not None and (emg_band or np.inf) < MIN_EMG_BANDWIDTH_HZ:
            logger.warning(
                "chin EMG %r holds nothing above %g Hz (recorded at %g Hz): not used for "
                "arousals, which need muscle activity up to at least %g Hz",
                info.channels[self.row_emg].name,
                emg_band,
                2 * emg_band,
                MIN_EMG_BANDWIDTH_HZ,
            )
            row_arousal_emg = None
        self.arousal = ArousalDetector(
            self.sfreq,
            block,
            has_emg=row_arousal_emg is not None,
            accel_axes=0 if self.row_accel is None else 1,
        )
        self._arousal_rows = [
            r for r in (self.row_eeg, row_arousal_emg, self.row_accel) if r is not None
        ]
        kind = program.trigger.kind
        self.arousal_pause = ArousalPause(
            program.gate,
            self.sfreq,
            ignore=("eeg",) if kind == "alpha-phase" else (),
            brief=("emg",) if kind == "rem-cue" else (),
        )
        self._recent_stages: list[str] = []
        self._n_requested = 0  # stimuli asked for so far (cue sounds cycle with it)
        self.stager = OnlineStager(
            self.sfreq, has_eog=self.row_eog is not None, has_emg=self.row_emg is not None
        )
        self.n_epoch = self.stager.n_epoch
        self._buf = np.zeros((3, self.n_epoch))  # eeg, eog, emg of the open epoch
        self._buf_bad = 0
        self._buf_fill = 0
        self._epoch = 0
        self.stage = "W"  # nothing is known at switch-on: act as if awake
        self.last_onset = -(10**12)
        self._guard_episode = -1  # distress episode of the guard's last pulse (onset index)
        self._guard_first = 0  # decision index of that episode's first pulse
        self.bad_until = -(10**12)  # stimulation withheld before this sample index
        self._bad_run: tuple[int, str] | None = None  # (start index, cause) of a bad stretch
        self.next_index = 0
        self._tail = 0  # samples after the last whole block given to process_tail
        self.stopped = False  # a stage of gate.stop_at was decided: done for the night
        self._train_n = 0  # rem-cue: cues played in the current train
        self._period_trains = 0  # rem-cue: trains begun in this REM period

    # -- declared costs ---------------------------------------------------------------------
    def block_cycles(self) -> int:
        """Cycles of the per-block work (acquisition ISR plus dsp/quality/trigger task)."""
        b = self.block
        acq = ACQ_CYCLES_PER_BLOCK + ACQ_CYCLES_PER_CHANNEL_SAMPLE * self.n_channels * b
        dsp = (quality.CYCLES_PER_SAMPLE + int(self.arousal.cycles_per_sample)) * b
        return acq + dsp + trigger_cycles_per_block(self.trigger, b)

    def acquisition_cycles(self) -> int:
        """Cycles of the acquisition ISR alone."""
        return ACQ_CYCLES_PER_BLOCK + ACQ_CYCLES_PER_CHANNEL_SAMPLE * self.n_channels * self.block

    def staging_cycles(self) -> int:
        """Cycles of one epoch decision."""
        return self.stager.cycles_per_epoch()

    # -- the work ---------------------------------------------------------------------------
    #: When stimulation may start, read this far past the earliest possible onset. Short
    #: reads waste little after a stimulus cuts them; long ones cost fewer calls. Measured
    #: on an 8-h virtual night: 2 s -> 10,031 calls, 13.2 s; 15 s -> 2,439 calls, 9.4 s;
    #: 30 s -> 2,095 calls, 9.5 s (the re-read after each cut starts to cost more).
    LOOKAHEAD_S = 15.0

    def read_horizon(self, start: int, limit: int) -> int:
        """Where the next call to :meth:`process` should end (a block boundary <= ``limit``).

        Any horizon gives the same decisions (the app is chunk-invariant); this one only
        saves work. While the gate is closed nothing can be played before the next epoch
        decision, so the whole stretch is read at once; when it is open, reading stops a
        little past the earliest onset the refractory period allows, because a stimulus
        there would cut the read and the rest would be read again.
        """
        # A call never goes past the block in which the open epoch ends (its stage gates
        # what follows): reading further would only be read, filtered and scanned again.
        epoch_end = (self._epoch + 1) * self.n_epoch
        limit = max(start + self.block, min(limit, self._end_of_block(epoch_end - 1)))
        if not self._gate_open():
            return limit
        refractory = round(self.program.trigger.refractory_s * self.sfreq)
        earliest = max(start, self.last_onset + refractory)
        horizon = earliest + round(self.LOOKAHEAD_S * self.sfreq)
        horizon = -(-horizon // self.block) * self.block  # round up to a block boundary
        return max(start + self.block, min(limit, horizon))

    def _end_of_block(self, index: int) -> int:
        return (index // self.block + 1) * self.block

    def process(self, start: int, data: np.ndarray, flags: np.ndarray) -> ChunkResult:
        """Process whole blocks starting at sample ``start``.

        Parameters
        ----------
        start : int
            Absolute index of ``data[:, 0]``; must continue the previous call.
        data : ndarray, shape (n_channels, n)
            µV (biopotentials), ``n`` a multiple of the block size.
        flags : ndarray of uint8
            ADC flags, same shape.

        Returns
        -------
        ChunkResult
            ``n_consumed`` samples were processed (all of them, or up to the block in which
            a requested stimulus begins, or the block in which an epoch ends); the decisions
            made in them.
        """
        if start != self.next_index:
            raise ValueError(f"Blocks must be contiguous: expected {self.next_index}, got {start}.")
        n = data.shape[1]
        if n % self.block:
            raise ValueError(f"Expected whole blocks of {self.block} samples, got {n}.")
        eeg = data[self.row_eeg]
        # Lead-off or clipping on any EEG electrode is bad signal (the safety island sees
        # every EEG row too); flatness is judged on the channel the loop is closed on.
        eeg_flags = flags[self.row_eeg]
        if len(self.rows_eeg) > 1:
            eeg_flags = np.bitwise_or.reduce(flags[self.rows_eeg], axis=0)
        causes, q_scan = self.quality.peek(eeg, eeg_flags)
        bad_samples = np.repeat(causes != 0, self.block)
        t_snapshot = self.trigger.snapshot()
        t_in = data[self._trigger_rows] if self._multirow else eeg
        cands = self.trigger.scan(t_in, start)
        a_snapshot = self.arousal.snapshot()
        a_rows = data[self._arousal_rows]
        arousals = self.arousal.scan(
            a_rows if a_rows.shape[0] > 1 else a_rows[0], start, bad=bad_samples
        )
        # Arousals decided in this chunk hold back the candidates decided after them; the
        # committed state is updated below from the events of the part that is kept.
        pause = copy.copy(self.arousal_pause)
        pending = iter(sorted(arousals, key=lambda e: e.decision_index))
        next_ev = next(pending, None)

        # Bad blocks withhold stimulation from their first sample until the hold-off ends.
        bad_blocks = np.flatnonzero(causes)
        holdoff = round(BAD_SIGNAL_HOLDOFF_S * self.sfreq)
        # The stage decided at the end of the open epoch gates what comes after it, so a call
        # never goes past the block in which that epoch ends.
        epoch_end = (self._epoch + 1) * self.n_epoch
        limit = min(n, self._end_of_block(epoch_end - 1) - start)
        # A stimulus changes the world from its onset on: the call ends at the block that
        # holds the onset, whose samples must be read again once the stimulus was played.
        stims: list[StimRequest] = []
        end = limit
        for cand in cands:
            if cand.decision_index - start >= end:
                break
            while next_ev is not None and next_ev.decision_index <= cand.decision_index:
                pause.apply(next_ev)
                next_ev = next(pending, None)
            reqs = self._consider(cand, start, bad_blocks, holdoff, pause)
            if reqs:
                stims.extend(reqs)
                end = min(end, reqs[0].onset_index // self.block * self.block - start)

        n_blocks = end // self.block
        self.quality.commit(q_scan.state(n_blocks))
        if end < n:
            self.trigger.restore(t_snapshot)
            self.trigger.scan(t_in[..., :end], start)
            self.arousal.restore(a_snapshot)
            prefix = a_rows[:, :end]
            arousals = self.arousal.scan(
                prefix if prefix.shape[0] > 1 else prefix[0], start, bad=bad_samples[:end]
            )
        for ev in sorted(arousals, key=lambda e: e.decision_index):
            self.arousal_pause.apply(ev)
        causes = causes[:n_blocks]
        if causes.any():
            last_bad = start + (np.flatnonzero(causes)[-1] + 1) * self.block
            self.bad_until = max(self.bad_until, last_bad + holdoff)
        logs = self._log_bad_stretches(start, causes)
        # Sub-epoch states (REM onset, sleep onset) the trigger decided in the kept blocks.
        for ev in getattr(self.trigger, "events", ()):
            logs.append(
                {
                    "kind": "state",
                    "event": ev.kind,
                    "t": ev.decision_index / self.sfreq,
                    "value": round(ev.value, 3),
                }
            )
        stages = self._feed_stager(start, data[:, :end], bad_samples[:end])
        self.next_index = start + end
        return ChunkResult(end, stims, stages, logs)

    def process_tail(self, start: int, data: np.ndarray, flags: np.ndarray) -> list[StageDecision]:
        """The recording's last samples, fewer than a block, after its last whole block.

        A recording ends where it ends, not on a block boundary (7500 samples per epoch
        at 250 Hz is not a whole number of 8-sample blocks). Those last samples never fill
        a DMA block, so no per-block task (quality, trigger, arousal) sees them and no
        stimulus can be decided from them; the stager gets them, so that an epoch ending
        with the recording is complete and staged. An EEG sample with an ADC flag
        (lead-off, clipping) counts as bad for its epoch.

        Parameters
        ----------
        start : int
            Absolute index of ``data[:, 0]``: the end of the last whole block processed.
        data : ndarray, shape (n_channels, n)
            µV (biopotentials), ``0 < n < block``.
        flags : ndarray of uint8
            ADC flags, same shape.

        Returns
        -------
        list of StageDecision
            The decisions these samples completed (known at ``start + n``).
        """
        if start != self.next_index or self._tail:
            raise ValueError(
                f"The tail must follow the last block: expected {self.next_index}, got {start}."
            )
        n = data.shape[1]
        if not 0 < n < self.block:
            raise ValueError(f"Expected 1 to {self.block - 1} samples after the blocks, got {n}.")
        eeg_flags = np.bitwise_or.reduce(flags[self.rows_eeg], axis=0)
        self._tail = n
        return self._feed_stager(start, data, eeg_flags != 0)

    def withheld_at(self, index: int) -> str | None:
        """The last look before a timer fires at sample ``index``: why not to play now.

        A stimulus was decided on the blocks before it; the blocks that arrived since may
        show bad signal or an arousal. The timer's interrupt asks this (from the state of
        every block processed so far) and drops the stimulus when it answers.
        """
        if index < self.bad_until:
            return "withheld: bad signal"
        if self._held_by_arousal(self.arousal_pause, index):
            return "withheld: arousal"
        return None

    def _held_by_arousal(self, pause: ArousalPause, index: int, moved: int | None = None) -> bool:
        """Whether an arousal holds a stimulus at ``index`` back.

        The nightmare guard is not held by the program's pause after arousals: the
        nightmare's arousals are its own attempts to wake, and the pause (10 s, 300 s
        after a repeat) would silence the guard exactly when the sleeper needs it. Nor by
        a chin-EMG sign alone: in REM that is the nightmare's muscle activity, the very
        distress it answers. It waits while the sleeper is actually waking -- an arousal
        in progress that began with an EEG shift or movement -- and until movement
        (``moved``: the last sample with movement, the guard's own view) has been still
        for :data:`GUARD_SETTLE_S`: a pulse into a waking sleeper could turn the attempt
        into a full awakening, and is what the safety island trips on.
        """
        if self.guard:
            if moved is None:
                moved = self.trigger.last_movement_index
            settle = round(GUARD_SETTLE_S * self.sfreq)
            return (pause.in_arousal and pause.waking) or index - moved < settle
        return pause.holds(index)

    def _gate_open(self) -> bool:
        if self.stopped:
            return False
        gate = self.program.gate
        recent = self._recent_stages[-gate.stable_epochs :]
        return len(recent) == gate.stable_epochs and all(s in gate.stages for s in recent)

    def _consider(
        self,
        cand: Candidate,
        start: int,
        bad_blocks: np.ndarray,
        holdoff: int,
        pause: ArousalPause,
    ) -> list[StimRequest]:
        d = cand.decision_index
        if not self._gate_open():
            return []
        moved = cand.moved_index if isinstance(cand, GuardCandidate) else None
        if d < self.bad_until or self._held_by_arousal(pause, d, moved):
            return []
        # A bad block earlier in this chunk (or the decision's own block) withholds it too.
        prior = bad_blocks[bad_blocks <= (d - start) // self.block]
        if prior.size and d < start + (prior[-1] + 1) * self.block + holdoff:
            return []
        if cand.target_index - self.last_onset < self.program.trigger.refractory_s * self.sfreq:
            return []
        if self.rem_cue and not self._train_allows(cand.target_index):
            return []
        # The timer must still be in the future once the block has been processed.
        fire = cand.target_index - self.latency_samples
        if fire <= self._end_of_block(d):
            return []
        kind = self.program.trigger.kind
        cue = "spindle" if kind == "spindle" else f"so-upphase/{kind}"
        if isinstance(cand, GuardCandidate):
            cue = "nightmare-guard"
        elif kind in ("rem-cue", "alpha-phase"):
            cue = kind
        reason = "sham" if self.program.sham else cue
        detail = {"amplitude_uv": round(cand.amplitude_uv, 1), "freq_hz": round(cand.freq_hz, 3)}
        if kind == "alpha-phase":
            detail = {
                "alpha_uv": round(cand.amplitude_uv, 1),
                "freq_hz": round(cand.freq_hz, 3),
                "phase_at_decision": round(cand.phase_at_decision, 1),
            }
        if self.rem_cue:
            if self._train_n == 0:
                self._period_trains += 1
            self._train_n += 1
            detail = {"train": self._period_trains, "cue": self._train_n}
        if isinstance(cand, GuardCandidate):
            # Escalation counts from the episode's first pulse asked for (not from the
            # onset): the first pulse the sleeper can feel is the gentle one.
            if cand.episode != self._guard_episode:
                self._guard_episode, self._guard_first = cand.episode, d
            level, step = self.trigger.level_at(self._guard_first, d)
            # The runner plays the request at detail["level_db"] (percent for haptic).
            detail = {
                "hr_rise_bpm": round(cand.amplitude_uv, 1),
                "hr_bpm": round(cand.freq_hz * 60.0, 1),
                "level_db": level,
                "step": step,
            }
        detail["sound"] = self.program.stimulus.sound_for(self._n_requested)
        self._n_requested += 1
        onsets = [cand.target_index]
        if self.program.trigger.pair:
            # Ngo's second click: one cycle of the slow oscillation after the first.
            onsets.append(cand.target_index + round(self.sfreq / cand.freq_hz))
        self.last_onset = onsets[-1]
        return [
            StimRequest(d, onset, reason, {**detail, "click": k + 1} if len(onsets) > 1 else detail)
            for k, onset in enumerate(onsets)
        ]

    def _train_allows(self, target: int) -> bool:
        """``rem-cue``: whether a cue at ``target`` fits the trains (Dreamento-style).

        Cues come in trains of ``cue.train``, ``trigger.refractory_s`` apart; after a train
        (or a train broken off, e.g. by an arousal, for ``cue.pause_s``) a new one may
        start ``cue.pause_s`` after the last cue, at most ``cue.max_trains`` per REM period.
        """
        cue = self.program.cue
        since = target - self.last_onset
        pause = round(cue.pause_s * self.sfreq)
        if self._train_n >= cue.train or (self._train_n and since >= pause):
            if since < pause:
                return False
            self._train_n = 0  # the train is over: the next cue begins a new one
        return not (self._train_n == 0 and self._period_trains >= cue.max_trains)

    def _log_bad_stretches(self, start: int, causes: np.ndarray) -> list[dict]:
        logs: list[dict] = []
        if causes.size == 0 or (self._bad_run is None and not causes.any()):
            return logs  # the usual chunk: good signal, no bad stretch open
        change = np.flatnonzero(np.diff(np.concatenate([[-1], causes])) != 0)
        for i in change.tolist():
            c = int(causes[i])
            idx = start + i * self.block
            if self._bad_run is not None and (c == 0 or quality.CAUSES[c] != self._bad_run[1]):
                logs.append(self._close_bad_run(idx))
            if c != 0 and self._bad_run is None:
                self._bad_run = (idx, quality.CAUSES[c])
        return logs

    def _close_bad_run(self, end_index: int) -> dict:
        assert self._bad_run is not None
        first, cause = self._bad_run
        self._bad_run = None
        return {
            "kind": "safety",
            "event": "bad_signal",
            "t": first / self.sfreq,
            "duration": (end_index - first) / self.sfreq,
            "cause": cause,
        }

    def _adopt(self, dec: EpochDecision) -> None:
        self.stage = dec.stage
        self._recent_stages = [*self._recent_stages[-19:], dec.stage]
        if dec.stage in self.program.gate.stop_at and not self.stopped:
            self.stopped = True
            logger.info("program %s stops for the night: %s decided", self.program.name, dec.stage)
        if dec.stage != "R":
            # A REM period ends with the first epoch staged otherwise: the cap starts anew.
            self._period_trains = 0
            self._train_n = 0

    def finish(self) -> list[dict]:
        """Close an open bad-signal stretch at the end of the night."""
        if self._bad_run is None:
            return []
        return [self._close_bad_run(self.next_index)]

    def finish_stages(self) -> list[StageDecision]:
        """Decide the epoch the stager still holds when the night ends."""
        out = []
        for dec in self.stager.flush():
            self._adopt(dec)
            out.append(StageDecision(self.next_index + self._tail, dec))
        return out

    def _feed_stager(
        self, start: int, data: np.ndarray, bad_samples: np.ndarray
    ) -> list[StageDecision]:
        out: list[StageDecision] = []
        pos, n = 0, data.shape[1]
        while pos < n:
            take = min(n - pos, self.n_epoch - self._buf_fill)
            sl = slice(self._buf_fill, self._buf_fill + take)
            self._buf[0, sl] = data[self.row_eeg, pos : pos + take]
            if self.row_eog is not None:
                self._buf[1, sl] = data[self.row_eog, pos : pos + take]
            if self.row_emg is not None:
                self._buf[2, sl] = data[self.row_emg, pos : pos + take]
            self._buf_bad += int(bad_samples[pos : pos + take].sum())
            self._buf_fill += take
            pos += take
            if self._buf_fill == self.n_epoch:
                bad = self._buf_bad > self.n_epoch // 2
                decisions = self.stager.push_epoch(
                    self._buf[0],
                    self._buf[1] if self.row_eog is not None else None,
                    self._buf[2] if self.row_emg is not None else None,
                    bad,
                )
                # The stager may hold an epoch until the next one has arrived (one epoch of
                # look-ahead): its decision is known at the end of the block in which the
                # newer epoch ends (or of the recording, in a tail shorter than a block).
                known = min(self._end_of_block((self._epoch + 1) * self.n_epoch - 1), start + n)
                for dec in decisions:
                    self._adopt(dec)
                    out.append(StageDecision(known, dec))
                self._epoch += 1
                self._buf_fill = 0
                self._buf_bad = 0
        return out

"""One night: the world, the front-end, the firmware and the MCU on SimPy time.

The firmware loop is a SimPy process. It reads the next stretch of samples through the ADC
front-end, lets the application process as many whole blocks as it can (up to the first
block in which the program asks for a stimulus, or the end of an epoch), then advances
virtual time to the arrival of the last block it consumed. What happens in those blocks —
a stimulus decision, an epoch decision — is replayed on the simulated core at the time its
block arrived, with preemption, so response times and deadline misses are measured.
A stimulus is fired by a timer process one output latency before its onset sample,
through the safety island's port (the island alone drives the interlock). The pulse is then
in flight: at its onset it reaches the transducer and the world (the virtual sleeper) hears
it, before any sample after its onset is read, unless the interlock opened in the
meantime, which cuts it (logged ``delivered: false``, reason :data:`CUT_REASON`, counted
as ``cut``).

The safety island (:mod:`firmware.safety`) is a SimPy process of its own that never asks
for the application core: it sleeps until its timer's next deadline and polls. Nothing
else polls it on its behalf: the firmware loop only waits for the island's deadlines
(so that it does not read past them), and the island's entry points (requests, check-ins,
host and button) are its own mailbox. It sees every DMA block as the ADC delivers it
(``on_blocks``), whatever the application does; the application's tasks check in from
where they run (period check-ins of bulk-accounted blocks are stamped from their sample
indices, see ``_period_check_ins``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import simpy

from firmware.app import (
    MODULATION_CYCLES,
    Application,
    StageDecision,
    StimRequest,
    check_device_rate,
)
from firmware.program import Program, check_against_limits, load_program
from firmware.safety import SafetyConfig, SafetyIsland, check_safety_config
from hal import open_source
from hal.adc import AdcModel, FrontEnd
from hal.base import DEFAULT_BLOCK, SignalSource, Stimulus, Transducer, UserInputError
from hal.interlock import Limits
from sim.kernel import VirtualEnvironment
from sim.mcu import DEFAULT_CLOCK_HZ, McuCore

logger = logging.getLogger(__name__)

#: Task priorities on the application core (lower wins).
PRIO_ACQUISITION, PRIO_DSP, PRIO_MODULATION, PRIO_STAGING = 0, 1, 2, 3

#: Longest stretch the application processes in one call (a stimulus or an epoch end
#: usually cuts it shorter).
MAX_CHUNK_S = 30.0

#: Reason logged for a granted stimulus the interlock cut in flight (it opened between the
#: trigger and the onset at the transducer).
CUT_REASON = "cut: interlock opened in flight"


@dataclass
class RunConfig:
    """Everything that defines a run; a run is reproducible from it.

    Parameters
    ----------
    source : str
        Source spec (``sleeper://?seed=1&hours=8``, a path, ``file://...``).
    program : str
        Built-in program name or TOML path.
    seed : int
        Seed of everything random in the run (ADC noise; the sleeper when the spec has none).
    channel : str or None
        EEG channel for recordings (``None``: the first EEG channel, logged).
    sfreq : float or None
        Device rate, a whole number of Hz; None: the spec's ``sfreq=`` if it has one, else
        :data:`hal.base.DEFAULT_SFREQ`. A rate given here and a different one in the spec
        is a :class:`~hal.base.UserInputError`.
    block : int
        Samples per DMA block.
    clock_hz : float
        MCU clock.
    audio_latency_s : float
        Output latency of the audio transducer.
    adc : AdcModel
        Front-end model.
    limits : Limits
        Interlock limits.
    min_sfreq : float or None
        Lowest recording rate accepted; None: the spec's ``min_sfreq=`` if it has one,
        else :data:`hal.recording.DEFAULT_MIN_SFREQ` (100 Hz). As for ``sfreq``, a value
        given here and a different one in the spec is an error.
    record : bool
        Keep the samples the firmware saw (for session.fif).
    safety : SafetyConfig or None
        The safety island's configuration (None: defaults with ``limits``).
    scenario : str or None
        A fault or story scenario of :mod:`sim.scenarios` (``nightmare-glitch``...).
    """

    source: str = "sleeper://?hours=8"
    program: str = "clas"
    seed: int = 1
    channel: str | None = None
    sfreq: float | None = None
    block: int = DEFAULT_BLOCK
    clock_hz: float = DEFAULT_CLOCK_HZ
    audio_latency_s: float = 0.015
    adc: AdcModel = field(default_factory=AdcModel)
    limits: Limits = field(default_factory=Limits)
    min_sfreq: float | None = None
    record: bool = True
    safety: SafetyConfig | None = None
    scenario: str | None = None


@dataclass
class RunResult:
    """What a night produced, before it is written to disk."""

    config: RunConfig
    program: Program
    source_description: str
    sfreq: float
    ch_names: list[str]
    ch_roles: list[str]
    n_samples: int
    events: list[dict]
    hypnogram: list[tuple[float, str]]
    summary: dict
    annotations: list[tuple[float, float, str]]
    recorded: np.ndarray | None = None  # µV (native units for accel), float32
    true_hypnogram: list[str] | None = None
    meas_date: float | None = None  # POSIX time of the first sample, when known


def _spec_options(spec: str) -> dict[str, str]:
    """The options written in a spec's query string (none for a plain path).

    A repeated key is left for the backend to refuse, with its own message.
    """
    parts = urlsplit(spec)
    # A plain path (or a Windows drive letter, "C:\\night.edf") has no query string:
    # hal.open_source takes all of it as the file's name.
    if len(parts.scheme) <= 1:
        return {}
    return dict(parse_qsl(parts.query, keep_blank_values=True))


def _spec_option(config: RunConfig, name: str, flag: str) -> object:
    """``config.<name>`` reconciled with the spec's ``?<name>=``: the value to pass.

    An option written in the spec wins over a default (None here); a value given in the
    config too must agree with it (one line naming both otherwise). Rates agree when
    their numbers do (``250`` and ``250.0``), channel names when their text does.
    """
    given = getattr(config, name)
    written = _spec_options(config.source).get(name)
    if given is None or written is None:
        return given  # None: the backend takes the spec's value, or its default
    if isinstance(given, str):
        same = written == given
    else:
        try:
            same = float(written) == float(given)
        except ValueError:
            return given  # not a number: the backend says so, naming the key
    if not same:
        shown = given if isinstance(given, str) else f"{float(given):g}"
        raise UserInputError(
            f"Conflicting values for {name}: {flag} {shown} but {name}={written} in "
            f"the source {config.source!r}; give it in one place (the source's value is used "
            f"when {flag} is left out)."
        )
    return given


def open_configured_source(config: RunConfig) -> SignalSource:
    """Open the run's source, passing the options the spec's backend understands.

    ``sfreq``, ``min_sfreq`` and ``channel`` written in the spec's query string win over
    the config's defaults (None); an explicit config value that contradicts the spec is an
    error. The device rate is checked (:func:`firmware.app.check_device_rate`) before a
    recording is loaded.

    Parameters
    ----------
    config : RunConfig
        The run; its ``source`` is the spec.

    Returns
    -------
    SignalSource
        Open; the caller closes it.

    Raises
    ------
    UserInputError
        A conflicting option, a device rate the firmware cannot run at, or anything the
        backend refuses (missing file, wrong channel...).
    """
    spec = config.source
    sfreq = _spec_option(config, "sfreq", "--sfreq")
    # The rate that will be used, checked before a recording is loaded (which takes time).
    rate = sfreq if sfreq is not None else _spec_options(spec).get("sfreq")
    with contextlib.suppress(TypeError, ValueError):  # not a number: the backend says so
        rate = float(rate)  # type: ignore[arg-type]
    if isinstance(rate, float):
        check_device_rate(rate)
    if spec.startswith("sleeper:"):
        # The run's seed seeds the sleeper unless the spec names its own.
        if "seed" in _spec_options(spec):
            return open_source(spec, sfreq=sfreq)
        return open_source(spec, sfreq=sfreq, seed=config.seed)
    min_sfreq = _spec_option(config, "min_sfreq", "--min-sfreq")
    channel = _spec_option(config, "channel", "--channel")
    return open_source(spec, sfreq=sfreq, channel=channel, min_sfreq=min_sfreq)


class Night:
    """Wires one night together; :meth:`run` executes it."""

    def __init__(
        self,
        config: RunConfig,
        source: SignalSource,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.program = load_program(config.program)
        # A program the safety limits forbid is refused before the night starts, not
        # discovered stimulus by stimulus as interlock refusals.
        check_against_limits(self.program, config.limits)
        self.scenario = None
        if config.scenario is not None:
            from sim.scenarios import make_scenario

            self.scenario = make_scenario(config.scenario, seed=config.seed)
            source = self.scenario.wrap_source(source)
        self.source = source
        self.info = source.info
        self.sfreq = self.info.sfreq
        self.block = config.block
        self.front = FrontEnd(source, config.adc, seed=config.seed)
        self.env = VirtualEnvironment()
        self.mcu = McuCore(self.env, config.clock_hz)
        self.mcu.on_deadline_miss = self._deadline_missed
        transducers = {
            "audio": Transducer("audio", config.audio_latency_s),
            "light": Transducer("light", 0.002),
            "haptic": Transducer("haptic", 0.02),
        }
        safety = config.safety or SafetyConfig(limits=config.limits)
        self.island = SafetyIsland(
            transducers,
            check_safety_config(safety),
            rearm_key=f"board-{config.seed}".encode(),
            roles=[c.role for c in self.info.channels],
            on_output=self._output,
            sfreq=self.sfreq,
        )
        del transducers  # the island owns them now
        # The application's only handle: request, check in, read latencies.
        self.port = self.island.port()
        latency = self.port.latency(self.program.stimulus.modality)
        self.app = Application(self.program, self.info, self.block, latency)
        if self.scenario is not None:
            self.app = self.scenario.wrap_app(self.app)
        # acquisition/dsp check in once per period of whole blocks (about a second).
        self.period_samples = max(
            self.block, round(safety.period_s * self.sfreq / self.block) * self.block
        )
        self.mod_seq = 0
        self._island_proc: simpy.Process | None = None
        self._island_wake_at = float("inf")
        self.hung = False
        # The device's sample clock runs at the nominal rate times (1 + drift).
        self.device_rate = self.sfreq * (1 + config.adc.drift_ppm * 1e-6)
        # The night's samples, and those in whole DMA blocks: a recording need not end on a
        # block boundary (an epoch is 7500 samples at 250 Hz, 937.5 blocks). The samples
        # after the last whole block (fewer than a block) only complete the last epoch for
        # the stager (Application.process_tail); nothing is padded or made up.
        self.n_samples = self.info.n_samples
        self.n_total = (self.n_samples // self.block) * self.block
        self.events: list[dict] = []
        self.hypnogram: list[tuple[float, str]] = []
        # Onset sample -> the "fired" events of the stimuli due then. Two may share an onset
        # (a faulty application asking beside the honest one): both are played or refused.
        self.pending: dict[int, list[simpy.Event]] = {}
        self.simulated_blocks: set[int] = set()
        self.progress = progress
        self.recorded = (
            np.zeros((len(self.info.channels), self.n_samples), dtype=np.float32)
            if config.record
            else None
        )
        self.counts = {
            "requested": 0,
            "delivered": 0,
            "refused": 0,
            "withheld": 0,
            "sham": 0,
            "late": 0,
            "after_end": 0,
            "cut": 0,
        }
        # The firmware loop waited once for this barrier (an island deadline or output):
        # if the island did not act on it, the loop does not wait for it again.
        self._waited_barrier = float("nan")

    # -- the safety island --------------------------------------------------------------------
    def _output(self, stim: Stimulus, t: float, cue: bool) -> None:
        """Whatever reached a transducer reaches the world (release cues included); a
        stimulus does at its onset, when the stim timer settles the interlock."""
        if cue:
            stim = Stimulus(
                round(t * self.device_rate), stim.modality, stim.level, stim.duration, stim.reason
            )
            self.events.append(
                {"kind": "safety", "t": t, "event": "release_cue", "level": stim.level}
            )
        if hasattr(self.source, "stimulate"):
            self.source.stimulate(stim)

    def _island_timer(self):
        """The island's own timer: sleep to its next deadline, poll; never uses the core."""
        island = self.island
        while not island.stopped:
            wake = island.next_wake()
            self._island_wake_at = wake
            try:
                if wake == float("inf"):
                    yield self.env.event()  # idle until kicked
                else:
                    yield self.env.timeout(max(0.0, wake - self.env.now))
            except simpy.Interrupt:
                pass
            self._island_wake_at = float("inf")
            island.poll(self.env.now)

    def _kick_island(self) -> None:
        """Re-arm the island's timer when something made its next deadline earlier."""
        proc = self._island_proc
        if proc is not None and proc.is_alive and self.island.next_wake() < self._island_wake_at:
            self._island_wake_at = -1.0  # one interrupt is enough
            proc.interrupt()

    def _period_check_ins(self, start: int, end: int) -> None:
        """acquisition/dsp check-ins of the periods that ended in samples ``(start, end]``.

        Most blocks are accounted in bulk, so the check-ins are stamped with the time the
        task finishes the period's last block (its arrival plus the block's work on the
        core), computed from sample indices, and handed over at once.
        """
        p = self.period_samples
        first, last = start // p, end // p  # periods first..last-1 end in (start, end]
        if last <= first:
            return
        acq_s = self.mcu.seconds(self.app.acquisition_cycles())
        dsp_s = self.mcu.seconds(self.app.block_cycles())
        ends = [self.t_of((k + 1) * p) for k in range(first, last)]
        self.port.check_in_periods(first, [e + acq_s for e in ends], [e + dsp_s for e in ends])

    # -- time ---------------------------------------------------------------------------------
    def t_of(self, index: float) -> float:
        """Time (s) at which sample ``index`` is taken."""
        return index / self.device_rate

    def _deadline_missed(self, task: str, response: float, deadline: float, count: int) -> None:
        event = {
            "kind": "deadline",
            "t": self.env.now if count == 1 else 0.0,
            "task": task,
            "response_ms": response * 1e3,
            "deadline_ms": deadline * 1e3,
        }
        if count > 1:  # bulk-accounted blocks: every one of them is late
            event["count"] = count
        self.events.append(event)

    # -- the simulated core -------------------------------------------------------------------
    def _block_tasks(self, block_end: int) -> simpy.Process:
        """Acquisition ISR, then the dsp task it releases, for the block ending at
        ``block_end``, on the core."""
        self.simulated_blocks.add(block_end)
        return self.env.process(self._block_work())

    def _block_work(self):
        period = self.block / self.device_rate
        acq = self.app.acquisition_cycles()
        arrival = self.env.now
        yield from self.mcu.run("acquisition", PRIO_ACQUISITION, acq, period)
        # The dsp task's deadline runs from the block's arrival, not from its own release
        # (a miss is logged as the time since the arrival against the period).
        yield from self.mcu.run(
            "dsp", PRIO_DSP, self.app.block_cycles() - acq, period, deadline_from=arrival
        )

    def _ticker(self, first_block_end: int, busy: Callable[[], bool]):
        """Release block tasks while a long task is in flight, so it gets preempted."""
        b = first_block_end + self.block
        while b <= self.n_total and busy() and not self.hung:
            yield self.env.timeout(max(0.0, self.t_of(b) - self.env.now))
            if not busy():
                break
            if b not in self.simulated_blocks:
                self._block_tasks(b)
            b += self.block

    def _stage_task(self, dec: StageDecision):
        yield self.env.timeout(max(0.0, self.t_of(dec.decision_index) - self.env.now))
        block_end = dec.decision_index
        # An epoch completed by the samples after the last whole block: no block arrived.
        if block_end <= self.n_total and block_end not in self.simulated_blocks:
            self._block_tasks(block_end)
        staging = self.env.process(
            self.mcu.run("staging", PRIO_STAGING, self.app.staging_cycles(), 30.0)
        )
        self.env.process(self._ticker(block_end, lambda: staging.is_alive))
        yield staging
        d = dec.decision
        self.port.check_in("staging", d.epoch, self.env.now)
        self._kick_island()
        start_s = d.epoch * self.app.n_epoch / self.sfreq
        self.hypnogram.append((start_s, d.stage))
        self.events.append(
            {
                "kind": "stage",
                "t": self.env.now,
                "epoch": d.epoch,
                "epoch_start_s": start_s,
                "stage": d.stage,
                "bad_signal": d.bad_signal,
            }
        )

    def _stim_task(self, req: StimRequest, fired: simpy.Event):
        block_end = (req.decision_index // self.block + 1) * self.block
        yield self.env.timeout(max(0.0, self.t_of(block_end) - self.env.now))
        if block_end in self.simulated_blocks:
            dsp_done = self.env.timeout(0)
        else:
            dsp_done = self._block_tasks(block_end)
        yield dsp_done
        spec = self.program.stimulus
        latency = self.port.latency(spec.modality)
        onset_t = self.t_of(req.onset_index)
        fire_t = onset_t - latency
        yield from self.mcu.run(
            "modulation", PRIO_MODULATION, MODULATION_CYCLES, max(fire_t - self.env.now, 0.0)
        )
        decided = self.env.now
        self.counts["requested"] += 1
        level = req.detail.get("level_db", spec.level_db)
        event = {
            "kind": "stim",
            "t": onset_t,
            "modality": spec.modality,
            "level": level,
            "duration": spec.duration_s,
            "decided_t": decided,
            **req.detail,
        }
        if decided > fire_t:
            self.counts["late"] += 1
            event.update(delivered=False, reason="late")
        elif req.onset_index >= self.n_samples:
            # Decided in the night's last moments for after its end: the recording (or the
            # virtual night) has no sample left to hear it, so it is logged, not played.
            self.counts["after_end"] += 1
            event.update(delivered=False, reason="after the night's end")
        else:
            yield self.env.timeout(fire_t - self.env.now)
            stim = Stimulus(
                req.onset_index,
                spec.modality,
                level,
                spec.duration_s,
                req.reason,
                req.detail.get("sound", spec.sound),
            )
            withheld = self.app.withheld_at(round(fire_t * self.device_rate))
            if withheld is not None:
                # The blocks since the decision showed bad signal or an arousal (sham too).
                self.counts["withheld"] += 1
                event.update(delivered=False, reason=withheld)
            elif self.program.sham:
                self.counts["sham"] += 1
                event.update(delivered=False, reason="sham")
            else:
                # The modulation task checks in, then asks; the world hears the stimulus
                # from the interlock's output (``_output``) if it reaches the transducer.
                self.port.check_in("modulation", self.mod_seq, self.env.now)
                self.mod_seq += 1
                verdict = self.port.request(stim, self.env.now)
                self._kick_island()
                if verdict.delivered:
                    # In flight for the output latency: at the onset the pulse reaches the
                    # transducer, unless the interlock opened in between (then it is cut).
                    yield self.env.timeout(max(0.0, onset_t - self.env.now))
                    if self.island.next_wake() <= self.env.now:
                        # The island's timer acts at this very instant too: let it go first.
                        yield self.env.timeout(0)
                    self.island.settle(self.env.now)
                if verdict.delivered and self.island.was_cut(stim):
                    self.counts["cut"] += 1
                    event.update(delivered=False, reason=CUT_REASON)
                elif verdict.delivered:
                    self.counts["delivered"] += 1
                    event.update(delivered=True, reason=req.reason)
                else:
                    self.counts["refused"] += 1
                    event.update(delivered=False, reason=verdict.reason)
        self.events.append(event)
        due = self.pending[req.onset_index]
        due.remove(fired)
        if not due:
            del self.pending[req.onset_index]
        fired.succeed()

    # -- the firmware loop --------------------------------------------------------------------
    def _firmware(self):
        idx = 0
        max_chunk = int(MAX_CHUNK_S * self.sfreq) // self.block * self.block
        next_report = 0.0
        island = self.island
        self._island_proc = self.env.process(self._island_timer())
        while idx < self.n_total:
            stop = min(idx + max_chunk, self.n_total)
            if self.pending:
                onset = min(self.pending)
                first_block = onset // self.block * self.block
                if first_block <= idx:  # the world may change at the onset: wait for it
                    yield self.pending[onset][0]
                    continue
                stop = min(stop, first_block)
            if not self.hung:  # read only as far as the app can use (the same decisions)
                stop = min(stop, self.app.read_horizon(idx, stop))
            # The island's own outputs (release cue) and the scenario's injections change
            # the world too: do not read past them before they happen. The loop only waits:
            # the island's own timer acts at its deadlines (the loop never polls it).
            barrier = island.next_output_time()
            if self.hung:  # nothing will push the watchdog's deadline: it is a barrier too
                barrier = min(barrier, island.next_wake())
            if barrier == self._waited_barrier:
                # Waited for once and the island did not act (its timer is late): that is
                # the island's failure to record, not a reason to stop the world.
                barrier = float("inf")
            if self.scenario is not None:
                barrier = min(barrier, self.scenario.next_injection(self.env.now))
            if barrier != float("inf"):
                b_idx = int(barrier * self.device_rate) // self.block * self.block
                if b_idx <= idx:
                    self._waited_barrier = barrier
                    yield self.env.timeout(max(0.0, barrier - self.env.now) + 1e-9)
                    continue
                stop = min(stop, b_idx)
            data, flags = self.front.read(idx, stop)
            if (
                not self.hung
                and self.scenario is not None
                and self.scenario.hang_at(self.t_of(idx))
            ):
                self._hang()
            if self.hung:  # the application is stuck: the DMA and the island go on
                n_ok = island.on_blocks(idx, data, flags, self._block_times(idx, stop))
                self._kick_island()
                if self.recorded is not None:
                    self.recorded[:, idx : idx + n_ok] = data
                if hasattr(self.source, "world_events"):
                    self.events.extend(self._world(idx, idx + n_ok))
                yield self.env.timeout(max(0.0, self.t_of(idx + n_ok) - self.env.now))
                idx += n_ok
                continue
            res = self.app.process(idx, data, flags)
            end = idx + res.n_consumed
            # The island sees the blocks the night keeps (a read-ahead past a stimulus is
            # read again): its own tap on the DMA, whatever the application did with them.
            island.on_blocks(
                idx, data[:, : end - idx], flags[:, : end - idx], self._block_times(idx, end)
            )
            self._period_check_ins(idx, end)
            self._kick_island()
            if self.recorded is not None:
                self.recorded[:, idx:end] = data[:, : res.n_consumed]
            for log in res.logs:
                self.events.append(log)
            for dec in res.stages:
                self.env.process(self._stage_task(dec))
            for req in res.stims:
                fired = self.env.event()
                self.pending.setdefault(req.onset_index, []).append(fired)
                self.env.process(self._stim_task(req, fired))
            if hasattr(self.source, "world_events"):
                self.events.extend(self._world(idx, end))
            yield self.env.timeout(max(0.0, self.t_of(end) - self.env.now))
            idx = end
            if self.progress is not None and idx / self.n_total >= next_report:
                self.progress(idx / self.n_total)
                next_report += 0.01
        decisions: list[StageDecision] = []
        if self.n_samples > self.n_total:
            # The samples after the last whole block. The world hears what is due before
            # them first, as it does before any sample after a stimulus's onset is read.
            while self.pending and min(self.pending) < self.n_samples:
                yield self.pending[min(self.pending)][0]
            data, flags = self.front.read(self.n_total, self.n_samples)
            if self.recorded is not None:
                self.recorded[:, self.n_total :] = data
            if hasattr(self.source, "world_events"):
                self.events.extend(self._world(self.n_total, self.n_samples))
            if not self.hung:
                decisions = self.app.process_tail(self.n_total, data, flags)
        if not self.hung:
            # The stager holds one epoch of look-ahead: the last one is decided at the end.
            decisions += self.app.finish_stages()
            last = [self.env.process(self._stage_task(d)) for d in decisions]
            if last:
                yield self.env.all_of(last)
        self.events.extend(self.app.finish())
        island.stop()
        if self._island_proc.is_alive:
            self._island_proc.interrupt()

    def _block_times(self, start: int, stop: int) -> np.ndarray:
        """Arrival time of each block in samples ``[start, stop)``."""
        return (
            start + self.block * np.arange(1, (stop - start) // self.block + 1)
        ) / self.device_rate

    def _hang(self) -> None:
        """The application hangs: it stops checking in and spins on the core at top priority."""
        self.hung = True
        spin = max(0.0, self.t_of(self.n_total) - self.env.now) * self.mcu.clock_hz
        self.env.process(self.mcu.run("hung-app", -1, spin))
        self.events.append({"kind": "world", "t": self.env.now, "event": "app_hang"})

    def _world(self, start: int, stop: int) -> list[dict]:
        out = []
        for ev in self.source.world_events(start, stop):  # type: ignore[attr-defined]
            ev = dict(ev)
            ev["t"] = self.t_of(ev["t"] * self.sfreq)
            out.append(ev)
        return out

    def run(self) -> RunResult:
        """Simulate the night and collect its results."""
        wall0 = time.perf_counter()
        self.env.process(self._firmware())
        if self.scenario is not None:
            self.scenario.start(self)
        self.env.run()
        wall = time.perf_counter() - wall0
        elapsed = self.t_of(self.n_samples)
        # The blocks nobody had to simulate did the same uncontended work: add them in bulk.
        bulk = self.n_total // self.block - len(self.simulated_blocks)
        acq = self.app.acquisition_cycles()
        period = self.block / self.device_rate
        self.mcu.account("acquisition", PRIO_ACQUISITION, bulk, acq, period)
        self.mcu.account("dsp", PRIO_DSP, bulk, self.app.block_cycles() - acq, period)
        self.events.extend(self.island.log)
        self.events.sort(key=lambda e: e["t"])
        return self._result(wall, elapsed)

    def _result(self, wall: float, elapsed: float) -> RunResult:
        stages = [s for _, s in self.hypnogram]
        bad_s = sum(e["duration"] for e in self.events if e.get("event") == "bad_signal")
        in_sleep = sum(
            1
            for e in self.events
            if e["kind"] == "stim" and e["delivered"] and self._stage_at(e["t"]) in ("N2", "N3")
        )
        cpu = self.mcu.summary(elapsed)
        summary = {
            "source": self.info.description,
            "program": self.program.name,
            "seed": self.config.seed,
            "sfreq": self.sfreq,
            "block": self.block,
            "duration_s": elapsed,
            "epochs": len(self.hypnogram),
            "stages": {s: stages.count(s) for s in ("W", "N1", "N2", "N3", "R")},
            "stimuli": {**self.counts, "delivered_in_n2_n3": in_sleep},
            "bad_signal_s": bad_s,
            "world_events": sum(1 for e in self.events if e["kind"] == "world"),
            "deadline_misses": sum(t.deadline_misses for t in self.mcu.tasks.values()),
            "safety": {
                "trips": len(self.island.trips),
                "first_trip": self.island.trips[0] if self.island.trips else None,
                "limit_refusals": sum(1 for e in self.island.log if e["event"] == "limit"),
            },
            "cpu": cpu,
            "run_time_s": wall,
            "speed_x_realtime": elapsed / wall if wall > 0 else float("inf"),
        }
        return RunResult(
            config=self.config,
            program=self.program,
            source_description=self.info.description,
            sfreq=self.sfreq,
            ch_names=self.info.ch_names,
            ch_roles=[c.role for c in self.info.channels],
            n_samples=self.n_samples,
            events=self.events,
            hypnogram=self.hypnogram,
            summary=summary,
            annotations=[(a.onset, a.duration, a.description) for a in self.info.annotations],
            recorded=self.recorded,
            true_hypnogram=list(getattr(self.source, "hypnogram", None) or []) or None,
            meas_date=self.info.meas_date,
        )

    def _stage_at(self, t: float) -> str | None:
        k = int(t * self.sfreq // self.app.n_epoch)
        return self.hypnogram[k][1] if 0 <= k < len(self.hypnogram) else None


def run_night(config: RunConfig, progress: Callable[[float], None] | None = None) -> RunResult:
    """Simulate one night.

    Parameters
    ----------
    config : RunConfig
        What to run.
    progress : callable or None
        Called with the fraction done (0-1) about every 1% of the night.

    Returns
    -------
    RunResult
    """
    source = open_configured_source(config)
    try:
        return Night(config, source, progress).run()
    finally:
        source.close()


def peak_memory_mb(fn: Callable[[], object]) -> tuple[object, float]:
    """Run ``fn`` and return its result and the peak traced Python allocation in MB.

    Parameters
    ----------
    fn : callable
        Called once without arguments, under :mod:`tracemalloc`.

    Returns
    -------
    tuple
        ``fn()``'s result and the peak in MB (NumPy's buffers included: NumPy reports
        them to tracemalloc).
    """
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak / 1e6

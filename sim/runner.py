"""One night: the world, the front-end, the firmware and the MCU on SimPy time.

The firmware loop is a SimPy process. It reads the next stretch of samples through the ADC
front-end, lets the application process as many whole blocks as it can (up to the first
block in which the program asks for a stimulus, or the end of an epoch), then advances
virtual time to the arrival of the last block it consumed. What happens in those blocks —
a stimulus decision, an epoch decision — is replayed on the simulated core at the time its
block arrived, with preemption, so response times and deadline misses are measured.
A stimulus is fired by a timer process at its exact onset sample, through the interlock;
the world (the virtual sleeper) hears it before any sample after its onset is read.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simpy

from firmware.app import MODULATION_CYCLES, Application, StageDecision, StimRequest
from firmware.program import Program, load_program
from hal import open_source
from hal.adc import AdcModel, FrontEnd
from hal.base import DEFAULT_BLOCK, DEFAULT_SFREQ, SignalSource, Stimulus, Transducer
from hal.interlock import Interlock, Limits
from sim.kernel import VirtualEnvironment
from sim.mcu import DEFAULT_CLOCK_HZ, McuCore

logger = logging.getLogger(__name__)

#: Task priorities on the application core (lower wins).
PRIO_ACQUISITION, PRIO_DSP, PRIO_MODULATION, PRIO_STAGING = 0, 1, 2, 3

#: Longest stretch the application processes in one call (a stimulus or an epoch end
#: usually cuts it shorter).
MAX_CHUNK_S = 30.0


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
    sfreq : float
        Device rate.
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
    min_sfreq : float
        Lowest recording rate accepted.
    record : bool
        Keep the samples the firmware saw (for session.fif).
    """

    source: str = "sleeper://?hours=8"
    program: str = "clas"
    seed: int = 1
    channel: str | None = None
    sfreq: float = DEFAULT_SFREQ
    block: int = DEFAULT_BLOCK
    clock_hz: float = DEFAULT_CLOCK_HZ
    audio_latency_s: float = 0.015
    adc: AdcModel = field(default_factory=AdcModel)
    limits: Limits = field(default_factory=Limits)
    min_sfreq: float = 100.0
    record: bool = True


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


def open_configured_source(config: RunConfig) -> SignalSource:
    """Open the run's source, passing the options the spec's backend understands."""
    spec = config.source
    if spec.startswith("sleeper:"):
        # The run's seed seeds the sleeper unless the spec names its own.
        if "seed=" in spec:
            return open_source(spec, sfreq=config.sfreq)
        return open_source(spec, sfreq=config.sfreq, seed=config.seed)
    return open_source(spec, sfreq=config.sfreq, channel=config.channel, min_sfreq=config.min_sfreq)


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
        self.interlock = Interlock(
            transducers, config.limits, rearm_token=f"board-{config.seed}", sfreq=self.sfreq
        )
        latency = self.interlock.latency(self.program.stimulus.modality)
        self.app = Application(self.program, self.info, self.block, latency)
        # The device's sample clock runs at the nominal rate times (1 + drift).
        self.device_rate = self.sfreq * (1 + config.adc.drift_ppm * 1e-6)
        self.n_total = (self.info.n_samples // self.block) * self.block
        self.events: list[dict] = []
        self.hypnogram: list[tuple[float, str]] = []
        self.pending: dict[int, simpy.Event] = {}  # onset sample -> fired
        self.simulated_blocks: set[int] = set()
        self.progress = progress
        self.recorded = (
            np.zeros((len(self.info.channels), self.n_total), dtype=np.float32)
            if config.record
            else None
        )
        self.counts = {"requested": 0, "delivered": 0, "refused": 0, "sham": 0, "late": 0}

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
        release = self.env.now
        yield from self.mcu.run("acquisition", PRIO_ACQUISITION, acq, period)
        # The dsp task's deadline runs from the block's arrival, not from its own release.
        yield from self.mcu.run(
            "dsp", PRIO_DSP, self.app.block_cycles() - acq, period - (self.env.now - release)
        )

    def _ticker(self, first_block_end: int, busy: Callable[[], bool]):
        """Release block tasks while a long task is in flight, so it gets preempted."""
        b = first_block_end + self.block
        while b <= self.n_total and busy():
            yield self.env.timeout(max(0.0, self.t_of(b) - self.env.now))
            if not busy():
                break
            if b not in self.simulated_blocks:
                self._block_tasks(b)
            b += self.block

    def _stage_task(self, dec: StageDecision):
        yield self.env.timeout(max(0.0, self.t_of(dec.decision_index) - self.env.now))
        block_end = dec.decision_index
        if block_end not in self.simulated_blocks:
            self._block_tasks(block_end)
        staging = self.env.process(
            self.mcu.run("staging", PRIO_STAGING, self.app.staging_cycles(), 30.0)
        )
        self.env.process(self._ticker(block_end, lambda: staging.is_alive))
        yield staging
        d = dec.decision
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
        latency = self.interlock.latency(spec.modality)
        onset_t = self.t_of(req.onset_index)
        fire_t = onset_t - latency
        yield from self.mcu.run(
            "modulation", PRIO_MODULATION, MODULATION_CYCLES, max(fire_t - self.env.now, 0.0)
        )
        decided = self.env.now
        self.counts["requested"] += 1
        event = {
            "kind": "stim",
            "t": onset_t,
            "modality": spec.modality,
            "level": spec.level_db,
            "duration": spec.duration_s,
            "decided_t": decided,
            **req.detail,
        }
        if decided > fire_t:
            self.counts["late"] += 1
            event.update(delivered=False, reason="late")
        else:
            yield self.env.timeout(fire_t - self.env.now)
            stim = Stimulus(
                req.onset_index,
                spec.modality,
                spec.level_db,
                spec.duration_s,
                req.reason,
                spec.sound,
            )
            if self.program.sham:
                self.counts["sham"] += 1
                event.update(delivered=False, reason="sham")
            else:
                verdict = self.interlock.request(stim, self.env.now)
                if verdict.delivered:
                    self.counts["delivered"] += 1
                    if hasattr(self.source, "stimulate"):
                        self.source.stimulate(stim)
                    event.update(delivered=True, reason=req.reason)
                else:
                    self.counts["refused"] += 1
                    event.update(delivered=False, reason=verdict.reason)
        self.events.append(event)
        del self.pending[req.onset_index]
        fired.succeed()

    # -- the firmware loop --------------------------------------------------------------------
    def _firmware(self):
        idx = 0
        max_chunk = int(MAX_CHUNK_S * self.sfreq) // self.block * self.block
        next_report = 0.0
        while idx < self.n_total:
            stop = min(idx + max_chunk, self.n_total)
            if self.pending:
                onset = min(self.pending)
                first_block = onset // self.block * self.block
                if first_block <= idx:  # the world may change at the onset: wait for it
                    yield self.pending[onset]
                    continue
                stop = min(stop, first_block)
            data, flags = self.front.read(idx, stop)
            res = self.app.process(idx, data, flags)
            end = idx + res.n_consumed
            if self.recorded is not None:
                self.recorded[:, idx:end] = data[:, : res.n_consumed]
            for log in res.logs:
                self.events.append(log)
            for dec in res.stages:
                self.env.process(self._stage_task(dec))
            for req in res.stims:
                fired = self.env.event()
                self.pending[req.onset_index] = fired
                self.env.process(self._stim_task(req, fired))
            if hasattr(self.source, "world_events"):
                self.events.extend(self._world(idx, end))
            yield self.env.timeout(max(0.0, self.t_of(end) - self.env.now))
            idx = end
            if self.progress is not None and idx / self.n_total >= next_report:
                self.progress(idx / self.n_total)
                next_report += 0.01
        self.events.extend(self.app.finish())

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
        self.env.run()
        wall = time.perf_counter() - wall0
        elapsed = self.t_of(self.n_total)
        # The blocks nobody had to simulate did the same uncontended work: add them in bulk.
        bulk = self.n_total // self.block - len(self.simulated_blocks)
        acq = self.app.acquisition_cycles()
        period = self.block / self.device_rate
        self.mcu.account("acquisition", PRIO_ACQUISITION, bulk, acq, period)
        self.mcu.account("dsp", PRIO_DSP, bulk, self.app.block_cycles() - acq, period)
        self.events.extend(self.interlock.log)
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
            n_samples=self.n_total,
            events=self.events,
            hypnogram=self.hypnogram,
            summary=summary,
            annotations=[(a.onset, a.duration, a.description) for a in self.info.annotations],
            recorded=self.recorded,
            true_hypnogram=list(getattr(self.source, "hypnogram", None) or []) or None,
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
    """Run ``fn`` and return its result and the peak traced Python allocation in MB."""
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak / 1e6

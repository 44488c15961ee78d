"""Fault and story scenarios for ``slumbersync simulate --scenario NAME``.

Each scenario is data plus small wrappers the runner applies:

* ``nightmare-glitch`` — the story. A glitched program escalates stimulation (every 2 s,
  +1 dB a time) once the sleeper is dreaming and never stops, whatever the interlock
  answers. :class:`NightmareWorld` wraps the base night: three stimuli heard within a
  minute while dreaming start a nightmare (heart rate +30 bpm on the ECG, chin-EMG bursts
  and movement: an arousal attempt every 15 s) and the sleeper is *trapped* (a ``world``
  event). The island's release cue (a light ramp) frees them: they wake and calm down
  (a ``world`` ``released`` event).
* ``app-hang`` — the application hangs at 120 s (stops checking in, spins on the core).
* ``flood`` — from 60 s, for 30 s, the application asks for a stimulus every 50 ms, rounded
  down to whole DMA blocks (every 32 ms at 250 Hz with 8-sample blocks).
* ``electrode-off`` — the EEG leads come off at 90 s for 60 s and a glitched program
  keeps stimulating.
* ``wake-button`` — the sleeper presses the wake button at 100 s; a forged re-arm is
  refused; a long press after the hold-off re-arms.

The world wrapper does not depend on the sleeper's internals: it reads the base night
through :class:`hal.base.SignalSource` (``hal.open_source("sleeper://...")``), adds its
own signals and replaces the ECG row with a heart it models itself. Its responses begin
at the stimulus onset (or the cue's): the runner lets the world hear a stimulus before any
sample after its onset is consumed, and reads again what it read ahead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from firmware.app import ChunkResult, StimRequest
from firmware.safety import rearm_frame
from hal.base import SignalSource, Stimulus, check_option

logger = logging.getLogger(__name__)

SCENARIOS = ("nightmare-glitch", "app-hang", "flood", "electrode-off", "wake-button")


class NightmareWorld:
    """A base night plus a nightmare the stimulation causes and the release ends.

    Parameters
    ----------
    base : SignalSource
        The night (the virtual sleeper); its world events and stimulus responses are kept.
    seed : int
        Seed of the wrapper's own randomness (EMG bursts).
    dream_from_s : float
        Time from which the sleeper dreams (the first REM epoch of the base night, or a
        given time for short test nights without REM).
    lead_off : tuple of float or None
        ``(start_s, duration_s)`` during which every EEG row reads NaN (leads off).

    Attributes
    ----------
    distress_on, distress_off : float or None
        When the nightmare began and when the sleeper calmed after the release, seconds;
        None until then.
    """

    HR_CALM, HR_DISTRESS = 60.0, 90.0

    def __init__(
        self,
        base: SignalSource,
        seed: int,
        dream_from_s: float = math.inf,
        lead_off: tuple[float, float] | None = None,
    ) -> None:
        self.base = base
        self.info = base.info
        self.sfreq = base.info.sfreq
        self.seed = seed
        self.dream_from_s = dream_from_s
        self.lead_off = lead_off
        roles = [c.role for c in self.info.channels]
        self._eeg = [i for i, r in enumerate(roles) if r == "eeg"]
        self._ecg = roles.index("ecg") if "ecg" in roles else None
        self._emg = roles.index("emg") if "emg" in roles else None
        self._acc = roles.index("accel") if "accel" in roles else None
        self._heard: list[float] = []
        self.distress_on: float | None = None
        self.distress_off: float | None = None
        self._events: list[dict] = []

    # -- SignalSource -----------------------------------------------------------------------
    def read(self, start: int, stop: int) -> np.ndarray:
        """Base samples with the nightmare's signals and a modelled heart.

        Parameters
        ----------
        start, stop : int
            Device sample indices, as :meth:`hal.base.SignalSource.read`.

        Returns
        -------
        ndarray of float64, shape (n_channels, n)
            Volts (a new array): the ECG row replaced by a 60-bpm heart (90 bpm in
            distress), movement and chin-EMG bursts during distress, NaN EEG while the
            leads are off.
        """
        # A copy: a recording hands out read-only views of the night, and this adds to them.
        x = np.array(self.base.read(start, stop), dtype=np.float64)
        n = x.shape[1]
        if n == 0:
            return x
        t = (start + np.arange(n)) / self.sfreq
        if self._ecg is not None:
            x[self._ecg] = self._heart(t)
        on, off = self.distress_on, self.distress_off
        if on is not None:
            d = (t >= on) & (t < (off if off is not None else math.inf))
            # An arousal attempt every 15 s: 3 s of movement and a chin-EMG burst.
            burst = d & (((t - on) % 15.0) < 3.0)
            if burst.any():
                rng = np.random.default_rng([self.seed, start])
                if self._acc is not None:
                    x[self._acc, burst] += 0.12 * np.sin(2 * np.pi * 1.5 * t[burst])
                if self._emg is not None:
                    x[self._emg, burst] += 60e-6 * rng.standard_normal(int(burst.sum()))
        if self.lead_off is not None:
            a, dur = self.lead_off
            off_mask = (t >= a) & (t < a + dur)
            if off_mask.any():
                x[np.ix_(self._eeg, np.flatnonzero(off_mask))] = np.nan
        return x

    def _heart(self, t: np.ndarray) -> np.ndarray:
        """ECG (volts): 1-mV R waves at the modelled rate, from a continuous phase."""
        f0, f1 = self.HR_CALM / 60.0, self.HR_DISTRESS / 60.0
        phase = t * f0
        if self.distress_on is not None:
            end = self.distress_off if self.distress_off is not None else math.inf
            phase = phase + (f1 - f0) * np.clip(np.minimum(t, end) - self.distress_on, 0, None)
        frac = phase - np.round(phase)
        return 1e-3 * np.exp(-0.5 * (frac / (0.012 * f0)) ** 2)

    def close(self) -> None:
        """Close the base night."""
        self.base.close()

    # -- WorldHook ----------------------------------------------------------------------------
    def stimulate(self, stimulus: Stimulus) -> None:
        """Hear a stimulus (or the island's release cue) and respond.

        The base night hears it too. While dreaming, the third stimulus within 60 s starts
        the nightmare 1 s later; a release cue during one ends it 2 s later.

        Parameters
        ----------
        stimulus : Stimulus
            What reached the sleeper (``reason == "release"`` for the cue).
        """
        if hasattr(self.base, "stimulate"):
            self.base.stimulate(stimulus)
        t = stimulus.onset_sample / self.sfreq
        if stimulus.reason == "release":
            if self.distress_on is not None and self.distress_off is None:
                # Woken by the light, the sleeper calms down over a few seconds.
                self.distress_off = t + 2.0
                self._events.append(
                    {
                        "kind": "world",
                        "t": self.distress_off,
                        "event": "released",
                        "outcome": "wakes and calms",
                    }
                )
            return
        if t < self.dream_from_s or self.distress_on is not None:
            return
        self._heard = [h for h in self._heard if h > t - 60.0] + [t]
        if len(self._heard) >= 3:
            self.distress_on = t + 1.0
            self._events.append(
                {
                    "kind": "world",
                    "t": self.distress_on,
                    "event": "nightmare",
                    "cause": "stimulation while dreaming",
                }
            )
            self._events.append(
                {
                    "kind": "world",
                    "t": self.distress_on,
                    "event": "trapped",
                    "detail": "distress and arousal attempts while stimulation goes on",
                }
            )

    def world_events(self, start: int, stop: int) -> list[dict]:
        """The base night's events plus the nightmare's, in ``[start, stop)``.

        Parameters
        ----------
        start, stop : int
            Device sample indices.

        Returns
        -------
        list of dict
            Events ordered by ``t`` (seconds).
        """
        out = (
            list(self.base.world_events(start, stop)) if hasattr(self.base, "world_events") else []
        )
        lo, hi = start / self.sfreq, stop / self.sfreq
        out += [dict(e) for e in self._events if lo <= e["t"] < hi]
        return sorted(out, key=lambda e: e["t"])

    @property
    def hypnogram(self):
        """The base night's hypnogram (for the report); None when it has none."""
        return getattr(self.base, "hypnogram", None)


class GlitchApp:
    """An application with a glitch that asks for ever louder stimuli.

    From ``start_s`` it asks for a stimulus every ``every_s`` (rounded down to whole DMA
    blocks, one block at least), ``step_db`` louder each time, and ignores every refusal.
    Each request is timed to reach the sleeper 0.3 s after the block that made it; when
    the wrapped application asks for a stimulus in the same chunk, the glitch asks for
    none that time. Everything else is the wrapped application's.

    Parameters
    ----------
    app : firmware.app.Application
        The application to wrap.
    start_s : float
        Time of the first request, seconds (rounded down to a block boundary).
    every_s : float
        Time between requests, seconds.
    level_db : float
        Level of the first request (dB SPL for audio).
    step_db : float
        Added to the level after each request.
    stop_s : float
        No request from this time on, seconds.
    """

    def __init__(
        self,
        app,
        start_s: float,
        every_s: float = 2.0,
        level_db: float = 50.0,
        step_db: float = 1.0,
        stop_s: float = math.inf,
    ) -> None:
        self._app = app
        self._stop = stop_s * app.sfreq
        self._next = round(start_s * app.sfreq) // app.block * app.block
        self._every = max(app.block, round(every_s * app.sfreq) // app.block * app.block)
        self._level = level_db
        self._step = step_db

    def __getattr__(self, name: str):
        return getattr(self._app, name)

    def withheld_at(self, index: int) -> str | None:
        """The glitch skips the last look before its timer fires.

        Parameters
        ----------
        index : int
            Sample at which a timer fires.

        Returns
        -------
        None
            Never a reason to withhold.
        """
        return None

    def process(self, start: int, data: np.ndarray, flags: np.ndarray) -> ChunkResult:
        """The wrapped processing, cut at the glitch's next request, plus that request.

        Parameters
        ----------
        start : int
            Absolute index of ``data[:, 0]``.
        data : ndarray, shape (n_channels, n)
            Samples, as :meth:`firmware.app.Application.process` takes them.
        flags : ndarray of uint8
            ADC flags, same shape.

        Returns
        -------
        ChunkResult
            The wrapped application's result, with the glitch's request (reason
            ``"glitch"``, ``detail["level_db"]``) added when one was due.
        """
        n = data.shape[1]
        if start < self._next < start + n:
            n = self._next - start
        res = self._app.process(start, data[:, :n], flags[:, :n])
        end = start + res.n_consumed
        if end >= self._next and self._next < self._stop:
            if not res.stims:
                onset = end + round(0.3 * self._app.sfreq)
                res.stims.append(StimRequest(end - 1, onset, "glitch", {"level_db": self._level}))
                self._level += self._step
            self._next = end + self._every
        return res


class FloodApp(GlitchApp):
    """An application that floods the interlock with requests for 30 s from ``start_s``.

    One 50-dB request every 50 ms, rounded down to whole DMA blocks (see
    :class:`GlitchApp`).

    Parameters
    ----------
    app : firmware.app.Application
        The application to wrap.
    start_s : float
        Time of the first request, seconds.
    """

    def __init__(self, app, start_s: float) -> None:
        super().__init__(
            app, start_s, every_s=0.05, level_db=50.0, step_db=0.0, stop_s=start_s + 30.0
        )


@dataclass
class Scenario:
    """What a scenario changes in a night (see the module docstring).

    Attributes
    ----------
    name : str
        One of :data:`SCENARIOS`.
    seed : int
        The run's seed (names the board for host re-arms).
    wrap_source : callable
        Wraps the night's :class:`hal.base.SignalSource` (identity by default).
    wrap_app : callable
        Wraps the application (identity by default).
    hang_s : float or None
        Time from which the application hangs, seconds; None: it never does.
    injections : list of tuple
        ``(t, action)``, ``t`` in seconds, ``action`` one of ``"button-down"``,
        ``"button-up"``, ``"kill"``, ``"rearm-forged"``, ``"rearm-host"``.
    """

    name: str
    seed: int
    wrap_source: Callable[[SignalSource], SignalSource] = lambda s: s
    wrap_app: Callable[[object], object] = lambda a: a
    hang_s: float | None = None
    #: ``(t, action)`` with action ``"button-down"``, ``"button-up"``, ``"kill"``,
    #: ``"rearm-forged"``, ``"rearm-host"``.
    injections: list[tuple[float, str]] = field(default_factory=list)

    def next_injection(self, now: float) -> float:
        """Time of the next injection (or hang) after ``now``; ``inf`` when none.

        Parameters
        ----------
        now : float
            Simulation time, seconds.

        Returns
        -------
        float
            Seconds.
        """
        times = [t for t, _ in self.injections if t > now]
        if self.hang_s is not None and self.hang_s > now:
            times.append(self.hang_s)
        return min(times, default=math.inf)

    def hang_at(self, t: float) -> bool:
        """Whether the application is hung at ``t``.

        Parameters
        ----------
        t : float
            Simulation time, seconds.

        Returns
        -------
        bool
        """
        return self.hang_s is not None and t >= self.hang_s

    def start(self, night) -> None:
        """Schedule the injections on the night's SimPy environment.

        Injections at or after the night's end (its last sample) never happen: they are
        dropped here (and logged), not run on after the night nor written as events.

        Parameters
        ----------
        night : sim.runner.Night
            The night being simulated (its environment, island and event list).
        """
        end = night.t_of(night.n_samples)
        late = sorted((t, a) for t, a in self.injections if not t < end)
        if late:
            logger.info(
                "scenario %s: not injected, at or after the night's end (%g s): %s",
                self.name,
                end,
                ", ".join(f"{a} at {t:g} s" for t, a in late),
            )
            self.injections = [(t, a) for t, a in self.injections if t < end]
        if self.injections:
            night.env.process(self._inject(night))

    def _inject(self, night):
        env, island = night.env, night.island
        nonce = 0
        for t, action in sorted(self.injections):
            yield env.timeout(max(0.0, t - env.now))
            if action == "button-down":
                island.button(True, env.now)
            elif action == "button-up":
                island.button(False, env.now)
            elif action == "kill":
                island.host_command(b"KILL", env.now)
            elif action == "rearm-forged":
                island.host_command(rearm_frame(b"guess", 1), env.now)
            elif action == "rearm-host":
                nonce += 1
                island.host_command(rearm_frame(f"board-{self.seed}".encode(), nonce), env.now)
            night.events.append({"kind": "world", "t": env.now, "event": action})
            night._kick_island()


def _first_rem_s(source: SignalSource) -> float:
    hyp = getattr(source, "hypnogram", None) or []
    return next((30.0 * k for k, s in enumerate(hyp) if s == "R"), math.inf)


def make_scenario(name: str, seed: int) -> Scenario:
    """Build the scenario ``name``.

    Parameters
    ----------
    name : str
        One of :data:`SCENARIOS` (``nightmare-glitch``, ``app-hang``, ``flood``,
        ``electrode-off``, ``wake-button``).
    seed : int
        Seed of the scenario's own randomness (the run's seed).

    Returns
    -------
    Scenario
        Its injections, and how it wraps the source and the application.

    Raises
    ------
    UserInputError
        An unknown name (the message suggests the nearest).
    """
    check_option("scenario", name, SCENARIOS)
    sc = Scenario(name, seed)
    if name == "nightmare-glitch":
        box: dict[str, float] = {}

        def wrap_source(src: SignalSource) -> SignalSource:
            # Short test nights have no REM: the sleeper dreams from 60 s then.
            rem = _first_rem_s(src)
            box["dream"] = rem if rem < src.info.duration else 60.0
            return NightmareWorld(src, seed, dream_from_s=box["dream"])

        sc.wrap_source = wrap_source
        sc.wrap_app = lambda app: GlitchApp(app, start_s=box["dream"] + 10.0, level_db=48.0)
    elif name == "app-hang":
        sc.hang_s = 120.0
    elif name == "flood":
        sc.wrap_app = lambda app: FloodApp(app, start_s=60.0)
    elif name == "electrode-off":
        sc.wrap_source = lambda src: NightmareWorld(src, seed, lead_off=(90.0, 60.0))
        sc.wrap_app = lambda app: GlitchApp(app, start_s=80.0, every_s=3.0, step_db=0.0)
    elif name == "wake-button":
        sc.injections = [
            (100.0, "button-down"),
            (100.5, "button-up"),
            (120.0, "rearm-forged"),
            (170.0, "button-down"),
            (176.0, "button-up"),
        ]
    return sc

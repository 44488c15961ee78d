"""The interlock: the one hardware path from the firmware to the transducers.

It is a latched gate in front of the outputs. It has no policy of its own beyond the hard
ceilings of the board (a pulse above them is refused, never clipped): the safety island
(:mod:`firmware.safety`) is its only controller. The island builds it from the
transducers, keeps the only reference to it, opens it on a trip and closes it on an
external re-arm. The application never sees it.

While open, nothing of the program reaches a transducer (S1). The one exception is the
release path (:meth:`Interlock.cue`): a dim light, capped in hardware, by which the island
itself wakes a sleeper it has just freed.

A pulse the gate passes is *in flight* for the transducer's output latency (the audio
codec's 15 ms): it reaches the transducer at its onset, ``t + latency_s``, not when it was
passed. The gate sits in front of the transducers, so opening it cuts every pulse still in
flight (:attr:`Interlock.cut`): a pulse whose onset falls at or after the opening never
reaches its transducer nor the world, whatever happens to the gate after. Who drives
time calls :meth:`Interlock.settle` at (or after) an onset to let what is due through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields

from hal.base import Stimulus, Transducer, UserInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Stimulation limits; each is checked over its own window.

    Attributes
    ----------
    max_level_db : float
        Loudest audio pulse, dB SPL.
    max_pulse_s : float
        Longest pulse, seconds.
    max_per_minute : int
        Most stimuli delivered in any 60-s window.
    max_per_night : int
        Most stimuli delivered in the night.
    max_light_pct : float
        Brightest light, percent of full intensity.
    max_haptic_pct : float
        Strongest haptic pulse, percent duty cycle.
    """

    max_level_db: float = 55.0
    max_pulse_s: float = 0.2
    max_per_minute: int = 30
    max_per_night: int = 3000
    max_light_pct: float = 30.0
    max_haptic_pct: float = 60.0


#: Ceilings no configuration can pass (and the interlock refuses above them in hardware).
HARD_CEILINGS = Limits(
    max_level_db=60.0,
    max_pulse_s=1.0,
    max_per_minute=40,
    max_per_night=6000,
    max_light_pct=100.0,
    max_haptic_pct=100.0,
)

#: The release path's own cap: the wake cue is a dim light, never anything else.
RELEASE_MAX_LIGHT_PCT = 30.0
RELEASE_MAX_PULSE_S = 2.0


def check_limits(limits: Limits) -> Limits:
    """Refuse limits above the hard ceilings or not positive, naming the field.

    Parameters
    ----------
    limits : Limits
        Limits from a configuration.

    Returns
    -------
    Limits
        ``limits`` itself, when every field is a number in ``(0, ceiling]``.

    Raises
    ------
    UserInputError
        A field is not a number (a bool is refused too), not positive, or above
        :data:`HARD_CEILINGS`.
    """
    for f in fields(Limits):
        value, ceiling = getattr(limits, f.name), getattr(HARD_CEILINGS, f.name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= ceiling
        ):
            raise UserInputError(
                f"Invalid safety limit '{f.name}': expected a value in (0, {ceiling}], got {value}."
            )
    return limits


def beyond_ceiling(stim: Stimulus, ceilings: Limits = HARD_CEILINGS) -> str | None:
    """Name the level or length of ``stim`` above ``ceilings``, or None.

    Parameters
    ----------
    stim : Stimulus
        The stimulus asked for.
    ceilings : Limits
        Limits to check against (the hard ceilings unless given).

    Returns
    -------
    str or None
        Why it is refused (the limit's field name, the value and the limit; NaN levels,
        durations not in ``(0, max_pulse_s]`` and unknown modalities are refused); None
        when it fits.
    """
    level_field = {
        "audio": "max_level_db",
        "light": "max_light_pct",
        "haptic": "max_haptic_pct",
    }.get(stim.modality)
    if level_field is None:
        return f"unknown modality {stim.modality!r}"
    level_max = getattr(ceilings, level_field)
    if not stim.level <= level_max:  # written so that NaN is refused too
        return f"{level_field} {stim.level} > {level_max}"
    if not 0 < stim.duration <= ceilings.max_pulse_s:
        return f"max_pulse_s {stim.duration} > {ceilings.max_pulse_s}"
    return None


#: Tolerance of :meth:`Interlock.settle` on an onset time (s): a caller's clock that adds
#: the latency its own way may land a few ulps before the onset the gate computed.
SETTLE_TOLERANCE_S = 1e-9


@dataclass(frozen=True)
class Output:
    """A pulse the gate passed, and when.

    Attributes
    ----------
    t : float
        Simulation time at which the gate passed it (the trigger), seconds.
    stimulus : Stimulus
        What was emitted.
    cue : bool
        True for the release path (:meth:`Interlock.cue`).
    onset_t : float or None
        When it reaches the transducer: ``t`` plus the transducer's latency (None: at
        ``t``, the release cue).
    """

    t: float
    stimulus: Stimulus
    cue: bool = False
    onset_t: float | None = None

    @property
    def at(self) -> float:
        """When it reaches (or reached) the transducer, seconds."""
        return self.t if self.onset_t is None else self.onset_t


class Interlock:
    """Latched gate in front of the transducers.

    Parameters
    ----------
    transducers : dict of str to Transducer
        By modality; owned by the interlock from now on.
    on_output : callable or None
        Called as ``on_output(stimulus, t, cue)`` for everything that reached a transducer
        (the simulator tells the world with it).

    Attributes
    ----------
    is_open : bool
        Whether the gate is open (nothing but the release cue gets through).
    openings : list of list
        ``[opened_t, closed_t or None]`` per opening, seconds.
    open_calls : list of float
        Per opening, the simulation time at which :meth:`open` was actually called (its
        ``now``): a controller that opens late but back-dates ``opened_t`` shows here.
    outputs : list of Output
        Everything that reached a transducer, in the order it did.
    cut : list of Output
        Pulses the gate passed that were still in flight when it opened: they never
        reached a transducer.
    """

    def __init__(
        self,
        transducers: dict[str, Transducer],
        on_output: Callable[[Stimulus, float, bool], None] | None = None,
    ) -> None:
        self._transducers = dict(transducers)
        self._on_output = on_output
        self.is_open = False
        #: ``[opened_t, closed_t or None]`` per opening, for the record and the proofs.
        self.openings: list[list[float | None]] = []
        self.open_calls: list[float] = []
        self.outputs: list[Output] = []
        self.cut: list[Output] = []
        self._in_flight: list[Output] = []  # passed, onset still to come

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities with a transducer."""
        return tuple(self._transducers)

    def latency(self, modality: str) -> float:
        """Output latency of a transducer, seconds.

        Parameters
        ----------
        modality : str
            One of :attr:`modalities`.

        Returns
        -------
        float
            The transducer's ``latency_s``.

        Raises
        ------
        KeyError
            No transducer of that modality.
        """
        return self._transducers[modality].latency_s

    def open(self, t: float, now: float | None = None) -> None:
        """Open: every output off at once; stays open until :meth:`close`.

        Pulses in flight whose onset is before ``t`` reached their transducer before the
        gate opened; those whose onset is at or after ``t`` are cut (:attr:`cut`).

        Parameters
        ----------
        t : float
            Simulation time of the opening, seconds (recorded in :attr:`openings`).
        now : float or None
            Simulation time at which the call is made (recorded in :attr:`open_calls`);
            None: ``t``.
        """
        self._reach(lambda o: o.at < t)
        if self._in_flight:
            self.cut.extend(self._in_flight)
            logger.info(
                "interlock opened at %.4f s: %d pulse(s) in flight cut", t, len(self._in_flight)
            )
            self._in_flight = []
        for transducer in self._transducers.values():
            transducer.off()
        if not self.is_open:
            self.is_open = True
            self.openings.append([t, None])
            self.open_calls.append(t if now is None else now)

    def close(self, t: float) -> None:
        """Close again (the island calls it on an external re-arm only).

        Parameters
        ----------
        t : float
            Simulation time, seconds (recorded in :attr:`openings`).
        """
        if self.is_open:
            self.is_open = False
            self.openings[-1][1] = t

    def emit(self, stim: Stimulus, t: float) -> bool:
        """Pass a stimulus towards its transducer unless open or beyond the hard ceilings.

        It is then in flight: it reaches the transducer at ``t + latency_s`` (at a
        :meth:`settle` call) unless the gate opens before.

        Parameters
        ----------
        stim : Stimulus
            The stimulus.
        t : float
            Simulation time of the trigger, seconds.

        Returns
        -------
        bool
            Whether the gate passed it (False when open, when there is no transducer of
            its modality or when it is beyond :data:`HARD_CEILINGS`).
        """
        if self.is_open or stim.modality not in self._transducers:
            return False
        if beyond_ceiling(stim) is not None:
            return False
        onset = t + self._transducers[stim.modality].latency_s
        self._in_flight.append(Output(t, stim, onset_t=onset))
        return True

    def settle(self, t: float) -> list[Output]:
        """Let the pulses whose onset has come (at or before ``t``) reach their transducers.

        Each one reaches its transducer and ``on_output`` (the world) is told, in onset
        order. Pulses cut by an opening are gone already (:meth:`open`).

        Parameters
        ----------
        t : float
            Simulation time, seconds (within :data:`SETTLE_TOLERANCE_S` of an onset counts).

        Returns
        -------
        list of Output
            What reached a transducer in this call.
        """
        return self._reach(lambda o: o.at <= t + SETTLE_TOLERANCE_S)

    def in_flight(self) -> list[Output]:
        """Pulses passed and not yet at their transducer, in the order passed."""
        return list(self._in_flight)

    def next_onset(self) -> float:
        """Onset of the next pulse in flight, seconds (``inf``: none)."""
        return min((o.at for o in self._in_flight), default=float("inf"))

    def _reach(self, due: Callable[[Output], bool]) -> list[Output]:
        now = [o for o in self._in_flight if due(o)]
        if not now:
            return []
        self._in_flight = [o for o in self._in_flight if not due(o)]
        now.sort(key=lambda o: o.at)
        for o in now:
            self._transducers[o.stimulus.modality].emit(o.stimulus)
            self.outputs.append(o)
            if self._on_output is not None:
                self._on_output(o.stimulus, o.at, False)
        return now

    def cue(self, stim: Stimulus, t: float) -> bool:
        """The release path: a dim light pulse, allowed while open, capped in hardware.

        Parameters
        ----------
        stim : Stimulus
            A light pulse: level 0 to :data:`RELEASE_MAX_LIGHT_PCT` percent, duration in
            ``(0, RELEASE_MAX_PULSE_S]`` seconds.
        t : float
            Simulation time, seconds.

        Returns
        -------
        bool
            Whether it reached the light (False for anything else, or without a light).
        """
        if (
            stim.modality != "light"
            or "light" not in self._transducers
            or not 0 <= stim.level <= RELEASE_MAX_LIGHT_PCT
            or not 0 < stim.duration <= RELEASE_MAX_PULSE_S
        ):
            return False
        self._transducers["light"].emit(stim)
        self.outputs.append(Output(t, stim, cue=True))
        if self._on_output is not None:
            self._on_output(stim, t, True)
        return True

    def was_cut(self, stim: Stimulus) -> bool:
        """Whether this very pulse (by identity) was cut in flight by an opening.

        Parameters
        ----------
        stim : Stimulus
            A stimulus passed to :meth:`emit`.

        Returns
        -------
        bool
        """
        return any(o.stimulus is stim for o in self.cut)

    def was_open(self, t: float) -> bool:
        """Whether the interlock was open at time ``t`` (from the record).

        Parameters
        ----------
        t : float
            Simulation time, seconds; an opening counts from its time until (excluding)
            the time it closed.

        Returns
        -------
        bool
        """
        return any(o <= t and (c is None or t < c) for o, c in self.openings)

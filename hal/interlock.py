"""The interlock: the one hardware path from the firmware to the transducers.

It is a latched gate in front of the outputs. It has no policy of its own beyond the hard
ceilings of the board (a pulse above them is refused, never clipped): the safety island
(:mod:`firmware.safety`) is its only controller. The island builds it from the
transducers, keeps the only reference to it, opens it on a trip and closes it on an
external re-arm. The application never sees it.

While open, nothing of the program reaches a transducer (S1). The one exception is the
release path (:meth:`Interlock.cue`): a dim light, capped in hardware, by which the island
itself wakes a sleeper it has just freed.
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


@dataclass(frozen=True)
class Output:
    """What reached a transducer, and when.

    Attributes
    ----------
    t : float
        Simulation time of the output, seconds.
    stimulus : Stimulus
        What was emitted.
    cue : bool
        True for the release path (:meth:`Interlock.cue`).
    """

    t: float
    stimulus: Stimulus
    cue: bool = False


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
    outputs : list of Output
        Everything that reached a transducer, in order.
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
        self.outputs: list[Output] = []

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

    def open(self, t: float) -> None:
        """Open: every output off at once; stays open until :meth:`close`.

        Parameters
        ----------
        t : float
            Simulation time, seconds (recorded in :attr:`openings`).
        """
        for transducer in self._transducers.values():
            transducer.off()
        if not self.is_open:
            self.is_open = True
            self.openings.append([t, None])

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
        """Pass a stimulus to its transducer unless open or beyond the hard ceilings.

        Parameters
        ----------
        stim : Stimulus
            The stimulus.
        t : float
            Simulation time, seconds.

        Returns
        -------
        bool
            Whether it reached the transducer (False when open, when there is no
            transducer of its modality or when it is beyond :data:`HARD_CEILINGS`).
        """
        if self.is_open or stim.modality not in self._transducers:
            return False
        if beyond_ceiling(stim) is not None:
            return False
        self._transducers[stim.modality].emit(stim)
        self.outputs.append(Output(t, stim))
        if self._on_output is not None:
            self._on_output(stim, t, False)
        return True

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

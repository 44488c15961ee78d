"""Ports of the device boundary: what a signal source and a transducer look like.

Everything that knows where samples come from lives behind :class:`SignalSource`;
everything that knows where stimuli go lives behind :class:`Transducer`. Board facts
(rate, channel roles, units) are data in :class:`SourceInfo`, as in BrainFlow: callers ask
by role and never hard-code channel indices.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

#: Channel roles a source may declare. Callers pick channels by role, never by index.
ROLES: tuple[str, ...] = ("eeg", "eog", "emg", "ecg", "accel", "resp", "misc")

#: The AASM stages, in the order used everywhere (hypnogram.csv, confusion matrices).
STAGES: tuple[str, ...] = ("W", "N1", "N2", "N3", "R")

#: Device sampling rate (Hz) unless a run asks for another.
DEFAULT_SFREQ = 250.0

#: Samples per DMA block (one interrupt per block).
DEFAULT_BLOCK = 8


class UserInputError(ValueError):
    """Bad input from the user: the CLI prints its message on one line and exits 2."""


def check_option(
    name: str, value: object, allowed: tuple[str, ...] | list[str], where: str = ""
) -> None:
    """Raise :class:`UserInputError` unless ``value`` is one of ``allowed``.

    The message names the parameter (and ``where`` it was read, e.g. a file), lists what
    is allowed and suggests the nearest allowed value, as MNE's ``_check_option`` does.

    Parameters
    ----------
    name : str
        Parameter name for the message.
    value : object
        The value given.
    allowed : tuple or list of str
        Allowed values.
    where : str
        Where the value was read (a file name); empty: not said.

    Raises
    ------
    UserInputError
        ``value`` is not in ``allowed``.
    """
    if value in allowed:
        return
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    place = f" in {where!r}" if where else ""
    raise UserInputError(
        f"Invalid value for the {name!r} parameter{place}. Allowed values are "
        f"{', '.join(repr(a) for a in allowed)}, but got {value!r} instead.{hint}"
    )


@dataclass(frozen=True)
class ChannelSpec:
    """One channel as the board presents it.

    Attributes
    ----------
    name : str
        Channel name as in the recording or board definition (e.g. ``"C3-A1"``).
    role : str
        One of :data:`ROLES`.
    bandwidth_hz : float or None
        Highest frequency this channel holds when it is below the device's Nyquist
        frequency (half the rate it was recorded at, resampled up; an EDF stores each
        signal at its own rate). None: the full band.

    Raises
    ------
    UserInputError
        ``role`` is not one of :data:`ROLES`.
    """

    name: str
    role: str
    bandwidth_hz: float | None = None

    def __post_init__(self) -> None:
        check_option("role", self.role, ROLES)


@dataclass(frozen=True)
class Annotation:
    """An annotation carried through from a recording.

    Attributes
    ----------
    onset : float
        Seconds from the recording's first sample.
    duration : float
        Seconds (0 for an instant).
    description : str
        The recording's label (e.g. ``"Sleep stage N2"``).
    """

    onset: float
    duration: float
    description: str


@dataclass(frozen=True)
class SourceInfo:
    """Facts about a signal source, as data.

    Attributes
    ----------
    sfreq : float
        Device sampling rate in Hz (the rate :meth:`SignalSource.read` delivers).
    channels : tuple of ChannelSpec
        Channels in the row order of :meth:`SignalSource.read`.
    n_samples : int
        Length of the night in device samples.
    description : str
        Human-readable origin (file path, ``sleeper://?seed=1``...), for logs and outputs.
    annotations : tuple of Annotation
        Annotations from the recording, kept for the outputs.
    meas_date : float or None
        POSIX time of the first sample when known.
    bandwidth_hz : float or None
        Highest frequency every channel holds when it is below the device's Nyquist
        frequency: half the rate a recording was made at, when it was resampled up to the
        device rate (the slowest channel's, see :attr:`ChannelSpec.bandwidth_hz` for each
        channel's own). None: the full band.
    """

    sfreq: float
    channels: tuple[ChannelSpec, ...]
    n_samples: int
    description: str = ""
    annotations: tuple[Annotation, ...] = ()
    meas_date: float | None = None
    bandwidth_hz: float | None = None

    @property
    def ch_names(self) -> list[str]:
        """Channel names in row order."""
        return [c.name for c in self.channels]

    def picks(self, role: str) -> list[int]:
        """Row indices of the channels with ``role`` (empty when the board has none).

        Parameters
        ----------
        role : str
            One of :data:`ROLES`.

        Returns
        -------
        list of int
            Rows of :meth:`SignalSource.read`, in order.

        Raises
        ------
        UserInputError
            ``role`` is not one of :data:`ROLES`.
        """
        check_option("role", role, ROLES)
        return [i for i, c in enumerate(self.channels) if c.role == role]

    @property
    def duration(self) -> float:
        """Length of the night in seconds."""
        return self.n_samples / self.sfreq


@runtime_checkable
class SignalSource(Protocol):
    """Where samples come from: a recording, the virtual sleeper, a board.

    ``read`` is random-access by sample index but callers move forward: a read may start
    anywhere at or after the start of the previous read (the simulator re-reads the tail of
    a chunk after a stimulus changed the world). Values are volts at the electrode,
    ``float64``, shape ``(n_channels, stop - start)``; NaN marks samples the source could not
    provide (lead-off, gaps). Reads past the end are clipped to ``n_samples``.
    """

    info: SourceInfo

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return samples ``[start, stop)`` in volts, one row per channel.

        Parameters
        ----------
        start, stop : int
            Device sample indices; ``stop`` is clipped to ``info.n_samples``.

        Returns
        -------
        ndarray of float64, shape (n_channels, n)
            Volts at the electrode; NaN where the source has no sample.
        """
        ...

    def close(self) -> None:
        """Release files, ports or threads (idempotent)."""
        ...


@dataclass(frozen=True)
class Stimulus:
    """A stimulus as it reaches (or is refused at) the transducer.

    Attributes
    ----------
    onset_sample : int
        Device sample index at which the transducer emits it (output latency included).
    modality : str
        ``"audio"``, ``"light"`` or ``"haptic"``.
    level : float
        dB SPL for audio, percent of full intensity for light, percent duty for haptic.
    duration : float
        Seconds.
    reason : str
        Why the program asked for it (``"so-upphase"``, ``"sham"``, ...).
    sound : str
        Name of the sound for audio cues (``"pink"`` for a pink-noise pulse).
    """

    onset_sample: int
    modality: str
    level: float
    duration: float
    reason: str
    sound: str = "pink"


class WorldHook(Protocol):
    """What a source that reacts to stimuli exposes (the virtual sleeper does)."""

    def stimulate(self, stimulus: Stimulus) -> None:
        """Tell the world a stimulus was emitted at ``stimulus.onset_sample``.

        Parameters
        ----------
        stimulus : Stimulus
            What reached the sleeper.
        """
        ...

    def world_events(self, start: int, stop: int) -> list[dict]:
        """Ground-truth events (``kind: "world"``) whose time lies in ``[start, stop)``.

        Parameters
        ----------
        start, stop : int
            Device sample indices.

        Returns
        -------
        list of dict
            Events with ``t`` in seconds, as written to ``events.jsonl``.
        """
        ...


@dataclass
class Transducer:
    """An output device (speaker, LED, vibration motor) with its output latency.

    The transducer only ever receives stimuli from :class:`hal.interlock.Interlock`;
    nothing else holds a reference to it.

    Attributes
    ----------
    modality : str
        ``"audio"``, ``"light"`` or ``"haptic"``.
    latency_s : float
        Delay from the trigger on the hardware timer to the output, seconds (audio codec
        ~15 ms).
    emitted : list of Stimulus
        Everything emitted so far, in order (the simulated output).

    Raises
    ------
    UserInputError
        ``modality`` is not one of the three.
    """

    modality: str
    latency_s: float
    emitted: list[Stimulus] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_option("modality", self.modality, ("audio", "light", "haptic"))

    def emit(self, stimulus: Stimulus) -> None:
        """Drive the output (simulated: remember what was emitted).

        Parameters
        ----------
        stimulus : Stimulus
            The pulse, already passed by the interlock.
        """
        self.emitted.append(stimulus)

    def off(self) -> None:
        """Stop any output at once (simulated outputs are pulses: nothing to stop)."""

"""Modulation programs: the user's "dream scenario" as a TOML file.

A program says when to stimulate (stage gate), how to find the moment (trigger) and what to
play (stimulus). It is validated completely before the night starts: an unknown field, a
wrong type or a value out of range is a one-line error naming the field, what is allowed
and what came.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hal.base import STAGES, UserInputError, check_option

#: Trigger kinds: phase estimators (firmware.phase), the simple trough trigger, the spindle
#: cue, the nightmare guard (REM distress, firmware.trigger.NightmareGuard), cues in REM
#: (firmware.trigger.RemCue) and alpha-phase-locked pulses (firmware.trigger.AlphaPhaseCue).
TRIGGER_KINDS = (
    "echt",
    "pll",
    "ngo",
    "so-upphase",
    "spindle",
    "rem-distress",
    "rem-cue",
    "alpha-phase",
)
#: Sounds the device synthesises itself; anything else must be a .wav file that exists and
#: holds audio (integer PCM or float, as :func:`scipy.io.wavfile.read` reads it).
BUILTIN_SOUNDS = ("pink", "click", "tone-440", "tone-660", "tone-880", "chime")
MODALITIES = ("audio", "light", "haptic")


def builtin_programs() -> list[str]:
    """Names of the programs shipped with the firmware (``clas``, ``sham``...).

    Returns
    -------
    list of str
        Names, sorted (the ``.toml`` files of ``firmware/programs``).
    """
    folder = resources.files("firmware") / "programs"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


@dataclass(frozen=True)
class Gate:
    """When a program may act.

    Attributes
    ----------
    stages : tuple of str
        Stages in which it may act (as the online stager decided them).
    stable_epochs : int
        How many of the last decided epochs must all be in ``stages`` (Dreem waits for a
        stretch of stable sleep before it starts).
    pause_after_arousal_s : float
        No stimulus from the first sign of an arousal (or movement) until this long after
        it ended, seconds (``alpha-phase``: also the quiet time after movement or a chin
        burst).
    repeat_window_s, repeat_pause_s : float
        An arousal that begins within ``repeat_window_s`` of the previous one pauses
        ``repeat_pause_s`` after it ends instead (the sleeper keeps waking: leave them be);
        seconds.
    stop_at : tuple of str
        Once the stager has decided one of these stages, the program stops for the night
        (``onset`` helps the sleeper fall asleep and leaves them alone from the first N2).
    """

    stages: tuple[str, ...] = ("N2", "N3")
    stable_epochs: int = 1
    pause_after_arousal_s: float = 10.0
    repeat_window_s: float = 300.0
    repeat_pause_s: float = 300.0
    stop_at: tuple[str, ...] = ()


@dataclass(frozen=True)
class TriggerSpec:
    """How the moment is found.

    Attributes
    ----------
    kind : str
        ``"echt"`` (endpoint-corrected Hilbert transform), ``"pll"`` (phase-locked loop),
        ``"ngo"`` (Ngo et al. 2013 threshold + fixed delay), ``"so-upphase"`` (trough +
        two quarter periods), ``"spindle"`` (a cue at each detected spindle) or
        ``"rem-distress"`` (the nightmare guard: pulses while REM distress lasts, one per
        ``refractory_s``, escalating as ``[escalation]`` says), ``"rem-cue"`` (cues while
        REM signs -- rapid eye movements, chin atonia -- are on, in trains as ``[cue]``
        says) or ``"alpha-phase"`` (pulses locked to a phase of the alpha rhythm).
    threshold_uv : float or None
        Down-state the trigger needs (µV, negative); ``None``: the estimator's default
        (-30 µV for echt/pll arming, -80 µV for ngo, -40 µV for so-upphase).
    refractory_s : float
        No stimulus within this time after the previous one (after the pair's second
        click for ``pair``), seconds (``rem-distress``: the time between pulses while
        distress lasts).
    pair : bool
        Play Ngo's two-click pair: a second click one predicted cycle after the first.
    target_deg : float
        ``alpha-phase`` only: the alpha phase each pulse reaches the ear at (0° = positive
        peak, ±180° = trough).
    min_amplitude_uv : float
        ``alpha-phase`` only: alpha amplitude (analytic, µV) needed for a pulse.
    """

    kind: str = "echt"
    threshold_uv: float | None = None
    refractory_s: float = 2.5
    pair: bool = False
    target_deg: float = 0.0
    min_amplitude_uv: float = 6.0


@dataclass(frozen=True)
class StimulusSpec:
    """What is played.

    Attributes
    ----------
    modality : str
        ``"audio"``, ``"light"`` or ``"haptic"``.
    sound : str
        A built-in sound (:data:`BUILTIN_SOUNDS`) or a ``.wav`` file.
    sounds : tuple of str
        Cue sounds played in turn (targeted memory reactivation); empty: ``sound`` always.
    level_db : float
        Audio level in dB SPL (light: percent intensity, haptic: percent drive).
    duration_s : float
        Pulse length in seconds.
    """

    modality: str = "audio"
    sound: str = "pink"
    sounds: tuple[str, ...] = ()
    level_db: float = 50.0
    duration_s: float = 0.05

    def sound_for(self, k: int) -> str:
        """The sound of the ``k``-th stimulus of the night (cues cycle in order).

        Parameters
        ----------
        k : int
            Number of earlier requests (a click pair is one request).

        Returns
        -------
        str
            ``sounds[k % len(sounds)]``, or ``sound`` when ``sounds`` is empty.
        """
        return self.sounds[k % len(self.sounds)] if self.sounds else self.sound


@dataclass(frozen=True)
class Escalation:
    """How the nightmare guard (trigger ``rem-distress``) raises its pulses.

    Attributes
    ----------
    start : float or None
        Level of the first pulse of an episode (unit of ``stimulus.level_db``); None: the
        stimulus level (no escalation).
    step : float
        Added every ``step_s`` while distress lasts (unit of ``stimulus.level_db``).
    step_s : float
        Time per step, seconds, from the episode's first pulse asked for (not from its
        onset).

    The top is ``stimulus.level_db``: no pulse goes above it, and it must fit the
    interlock's limits like any stimulus level.
    """

    start: float | None = None
    step: float = 0.0
    step_s: float = 10.0


@dataclass(frozen=True)
class Cue:
    """How the ``rem-cue`` trigger groups its cues (Dreamento-style trains).

    Attributes
    ----------
    train : int
        Cues per train, ``trigger.refractory_s`` apart.
    pause_s : float
        Silence after a train before the next one may start (from its last cue), seconds.
    max_trains : int
        Trains per REM period at most (a period ends when the stager decides a stage
        other than R).
    """

    train: int = 3
    pause_s: float = 30.0
    max_trains: int = 10


@dataclass(frozen=True)
class Program:
    """A validated modulation program.

    Attributes
    ----------
    name : str
        The program's name.
    description : str
        Free text for people.
    sham : bool
        Decide as usual but play nothing: would-be stimuli are logged (reason ``"sham"``).
    gate : Gate
        When it may act.
    trigger : TriggerSpec
        How the moment is found.
    stimulus : StimulusSpec
        What is played.
    escalation : Escalation
        The ``rem-distress`` trigger's escalation.
    cue : Cue
        The ``rem-cue`` trigger's trains.

    The allowed range of each field is the one :func:`parse_program` enforces
    (``docs/programs.md`` lists them).
    """

    name: str
    description: str = ""
    sham: bool = False
    gate: Gate = field(default_factory=Gate)
    trigger: TriggerSpec = field(default_factory=TriggerSpec)
    stimulus: StimulusSpec = field(default_factory=StimulusSpec)
    escalation: Escalation = field(default_factory=Escalation)
    cue: Cue = field(default_factory=Cue)


_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {
        "name": str,
        "description": str,
        "sham": bool,
        "gate": dict,
        "trigger": dict,
        "stimulus": dict,
        "escalation": dict,
        "cue": dict,
    },
    "gate": {
        "stages": list,
        "stable_epochs": int,
        "pause_after_arousal_s": (int, float),
        "repeat_window_s": (int, float),
        "repeat_pause_s": (int, float),
        "stop_at": list,
    },
    "trigger": {
        "kind": str,
        "threshold_uv": (int, float),
        "refractory_s": (int, float),
        "pair": bool,
        "target_deg": (int, float),
        "min_amplitude_uv": (int, float),
    },
    "stimulus": {
        "modality": str,
        "sound": str,
        "sounds": list,
        "level_db": (int, float),
        "duration_s": (int, float),
    },
    "escalation": {
        "start": (int, float),
        "step": (int, float),
        "step_s": (int, float),
    },
    "cue": {
        "train": int,
        "pause_s": (int, float),
        "max_trains": int,
    },
}


def _check_table(where: str, table: dict[str, Any], source: str) -> None:
    schema = _SCHEMA[where]
    prefix = f"{where}." if where else ""
    for key, value in table.items():
        if key not in schema:
            check_option(f"{prefix}{key}", key, sorted(schema), where=source)
        expected = schema[key]
        # bool is an int in Python; a number field must not accept true/false.
        if isinstance(value, bool) and expected is not bool:
            expected_ok = False
        else:
            expected_ok = isinstance(value, expected)
        if not expected_ok:
            names = (
                expected.__name__
                if isinstance(expected, type)
                else " or ".join(t.__name__ for t in expected)
            )
            raise UserInputError(
                f"Invalid type for '{prefix}{key}' in '{source}': expected {names}, "
                f"got {type(value).__name__} {value!r}."
            )


def _check_sound(name: str, sound: object, base: Path | None, source: str) -> None:
    if not isinstance(sound, str):
        raise UserInputError(
            f"Invalid type for '{name}' in '{source}': expected str, got {sound!r}."
        )
    if sound in BUILTIN_SOUNDS:
        return
    if not sound.endswith(".wav"):
        check_option(name, sound, BUILTIN_SOUNDS, where=source)
    path = Path(sound) if base is None else base / sound
    if not path.is_file():
        raise UserInputError(
            f"Missing stimulus file for '{name}' in '{source}': {path} does not exist "
            f"(expected a .wav file, or one of {', '.join(BUILTIN_SOUNDS)})."
        )
    _check_wav(name, path, source)


def _check_wav(name: str, path: Path, source: str) -> None:
    """Refuse a cue file that is not a WAV file with audio in it.

    Read with :func:`scipy.io.wavfile.read`, which takes integer PCM, float and
    WAVE_FORMAT_EXTENSIBLE files (24-bit cues are often the latter); the standard
    library's :mod:`wave` reads integer PCM only (before Python 3.12) and would refuse them.
    """
    import warnings

    from scipy.io import wavfile  # only programs with a cue file pay for the import

    try:
        with warnings.catch_warnings():
            # A truncated data chunk or a chunk it cannot parse is only a warning to the
            # reader; for a cue the device must play whole, it is a broken file.
            warnings.simplefilter("error", wavfile.WavFileWarning)
            _, samples = wavfile.read(path)
    except OSError as err:
        raise UserInputError(
            f"Cannot read stimulus file for '{name}' in '{source}': {path}: {err.strerror or err}."
        ) from None
    except Exception as err:  # noqa: BLE001 - whatever the reader trips on, it is not audio
        # On malformed headers the reader raises ValueError, struct.error or EOFError, and
        # on some garbage also errors of its own code (ZeroDivisionError, UnboundLocalError).
        why = str(err) or type(err).__name__
        raise UserInputError(
            f"Invalid stimulus file for '{name}' in '{source}': {path} is not a valid WAV "
            f"file ({why}; expected PCM or float audio in a RIFF/WAVE file)."
        ) from None
    if samples.shape[0] == 0:
        raise UserInputError(
            f"Invalid stimulus file for '{name}' in '{source}': {path} holds no audio (0 frames)."
        )


def _in_range(name: str, value: float, low: float, high: float, source: str) -> None:
    if not low <= value <= high:
        raise UserInputError(
            f"Invalid value for '{name}' in '{source}': expected {low} to {high}, got {value}."
        )


def parse_program(data: dict[str, Any], source: str = "<program>") -> Program:
    """Validate a program given as a mapping (the parsed TOML).

    Parameters
    ----------
    data : dict
        The program's tables.
    source : str
        Where it came from, for error messages; a ``.toml`` path also locates relative
        ``.wav`` cue files.

    Returns
    -------
    Program
        The program, with defaults for what ``data`` leaves out.

    Raises
    ------
    UserInputError
        An unknown field, a wrong type, a missing name, a value out of range or not
        allowed, a missing or unreadable cue file, an ``[escalation]`` or ``[cue]`` table
        for a trigger that has none.
    """
    _check_table("", data, source)
    for table in ("gate", "trigger", "stimulus", "escalation", "cue"):
        _check_table(table, data.get(table, {}), source)
    if "name" not in data:
        raise UserInputError(f"Missing field 'name' in '{source}': every program has a name.")
    gate_data = data.get("gate", {})
    stages = tuple(gate_data.get("stages", Gate.stages))
    if not stages:
        raise UserInputError(
            f"Invalid value for 'gate.stages' in '{source}': expected at least one of "
            f"{', '.join(STAGES)}, got an empty list (the program could never act)."
        )
    for stage in stages:
        check_option("gate.stages", stage, STAGES, where=source)
    stable = gate_data.get("stable_epochs", Gate.stable_epochs)
    _in_range("gate.stable_epochs", stable, 1, 20, source)
    pauses = {
        name: gate_data.get(name, getattr(Gate, name))
        for name in ("pause_after_arousal_s", "repeat_window_s", "repeat_pause_s")
    }
    for name, value in pauses.items():
        _in_range(f"gate.{name}", value, 0, 3600, source)
    stop_at = tuple(gate_data.get("stop_at", ()))
    for stage in stop_at:
        check_option("gate.stop_at", stage, STAGES, where=source)
    trig = TriggerSpec(**data.get("trigger", {}))
    check_option("trigger.kind", trig.kind, TRIGGER_KINDS, where=source)
    if trig.threshold_uv is not None:
        _in_range("trigger.threshold_uv", trig.threshold_uv, -300.0, 0.0, source)
    _in_range("trigger.refractory_s", trig.refractory_s, 0.5, 60.0, source)
    _in_range("trigger.target_deg", trig.target_deg, -180.0, 180.0, source)
    _in_range("trigger.min_amplitude_uv", trig.min_amplitude_uv, 0.0, 200.0, source)
    stim_data = dict(data.get("stimulus", {}))
    stim_data["sounds"] = tuple(stim_data.get("sounds", ()))
    stim = StimulusSpec(**stim_data)
    base = Path(source).parent if Path(source).suffix == ".toml" else None
    for name, sound in [("stimulus.sound", stim.sound)] + [
        (f"stimulus.sounds[{k}]", x) for k, x in enumerate(stim.sounds)
    ]:
        _check_sound(name, sound, base, source)
    check_option("stimulus.modality", stim.modality, MODALITIES, where=source)
    _in_range("stimulus.duration_s", stim.duration_s, 0.001, 5.0, source)
    _in_range("stimulus.level_db", stim.level_db, 0.0, 120.0, source)
    esc_data = data.get("escalation", {})
    if esc_data and trig.kind != "rem-distress":
        raise UserInputError(
            f"Invalid table '[escalation]' in '{source}': only the 'rem-distress' trigger "
            f"escalates, got trigger.kind = {trig.kind!r}."
        )
    esc = Escalation(**esc_data)
    if esc.start is not None:
        _in_range("escalation.start", esc.start, 0.0, stim.level_db, source)
    _in_range("escalation.step", esc.step, 0.0, 120.0, source)
    _in_range("escalation.step_s", esc.step_s, 1.0, 600.0, source)
    cue_data = data.get("cue", {})
    if cue_data and trig.kind != "rem-cue":
        raise UserInputError(
            f"Invalid table '[cue]' in '{source}': only the 'rem-cue' trigger plays cue "
            f"trains, got trigger.kind = {trig.kind!r}."
        )
    cue = Cue(**cue_data)
    _in_range("cue.train", cue.train, 1, 20, source)
    _in_range("cue.pause_s", cue.pause_s, 1.0, 3600.0, source)
    _in_range("cue.max_trains", cue.max_trains, 1, 1000, source)
    return Program(
        name=data["name"],
        description=data.get("description", ""),
        sham=data.get("sham", False),
        gate=Gate(
            stages=stages,
            stable_epochs=stable,
            **pauses,
            stop_at=stop_at,
        ),
        trigger=trig,
        stimulus=stim,
        escalation=esc,
        cue=cue,
    )


def load_program(name_or_path: str) -> Program:
    """Load a built-in program by name or a TOML file by path.

    Parameters
    ----------
    name_or_path : str
        ``"clas"``, ``"sham"``... or a path to a ``.toml`` file.

    Returns
    -------
    Program
        The validated program (:func:`parse_program`).

    Raises
    ------
    UserInputError
        Unknown name, missing file, not UTF-8 text, malformed TOML, invalid field.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserInputError(f"No such program file: {name_or_path}")
        try:
            # utf-8-sig: a byte-order mark (as some editors write) is not TOML.
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise UserInputError(
                f"Program file {path} is not UTF-8 text (TOML must be): byte "
                f"{err.object[err.start]:#04x} at offset {err.start}."
            ) from None
        source = str(path)
    else:
        check_option("program", name_or_path, builtin_programs())
        text = (resources.files("firmware") / "programs" / f"{name_or_path}.toml").read_text(
            encoding="utf-8"
        )
        source = f"{name_or_path} (built in)"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"Malformed program file {source}: {err}") from None
    return parse_program(data, source)


def check_against_limits(program: Program, limits) -> None:
    """Refuse, before the night starts, a program whose stimulus the limits forbid.

    Parameters
    ----------
    program : Program
        The validated program.
    limits : hal.interlock.Limits
        The interlock's limits for this night.

    Raises
    ------
    UserInputError
        Naming the program's field and the limit it breaks.
    """
    stim = program.stimulus
    checks = {
        "audio": ("stimulus.level_db", stim.level_db, "max_level_db", limits.max_level_db),
        "light": ("stimulus.level_db", stim.level_db, "max_light_pct", limits.max_light_pct),
        "haptic": ("stimulus.level_db", stim.level_db, "max_haptic_pct", limits.max_haptic_pct),
    }
    field_name, value, limit_name, limit = checks[stim.modality]
    for fname, fvalue, lname, lvalue in (
        (field_name, value, limit_name, limit),
        ("stimulus.duration_s", stim.duration_s, "max_pulse_s", limits.max_pulse_s),
    ):
        if fvalue > lvalue:
            raise UserInputError(
                f"Program '{program.name}' asks for {fname} = {fvalue}, beyond the safety "
                f"limit {lname} = {lvalue}: lower it (requests beyond a limit are refused, "
                f"never clipped)."
            )

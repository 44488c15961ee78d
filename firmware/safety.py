"""The safety island: windowed watchdog, limits, independent signal view, latched kill.

The island is firmware outside the flashable application. On the board it runs on its own
core with its own oscillator and timer; here it is an object driven by a timer of its own
(``next_wake`` / ``poll``: the simulator runs it as a separate SimPy process that never
asks for the application core). It builds the :class:`hal.interlock.Interlock` from the
transducers and keeps the only reference to it. The application gets an :class:`AppPort`
— request a stimulus, check in, read the output latency — and nothing else: no interlock,
no transducer, no island state, no re-arm. Re-arm comes only from outside the firmware: a
host command carrying an HMAC of the board's secret (:meth:`SafetyIsland.host_command`) or
a long press of the wake button (:meth:`SafetyIsland.button`).

A granted request is a pulse in flight to its transducer for the output latency; a trip
that opens the interlock before its onset cuts it (:mod:`hal.interlock`), so
``Verdict.delivered`` means "passed the gate", and the driver of time settles the gate at
each onset (:meth:`SafetyIsland.settle`) to learn whether it reached the transducer.

Time
----
Every entry point takes ``t``, the true time of the call, supplied by the driver (on the
board: the island's timer capture register). Each trip records ``acted_t``, the time of
the poll that really opened the interlock, beside the scheduled ``opened_t``: with the
island's own timer running they are equal; a timer that did not run shows as a later
``acted_t`` (the interlock records it too, :attr:`hal.interlock.Interlock.open_calls`).
The island acts on its own tick grid: a condition that begins at ``since`` is handled at
the first tick at or after it and the interlock opens ``reaction_s`` later, so the kill
latency is at most ``tick_s + reaction_s`` (< ``t_react_s``, default 10 ms). Windows are
measured on the island's own clock (which may drift by ``clock_ppm`` from true time).

Watchdog (temporal and logical monitoring, IEC 61508-2 Table A.10)
------------------------------------------------------------------
* ``acquisition`` then ``dsp`` once per period (``period_s``, about one second of blocks),
  sequence numbers 0, 1, 2...: the interval between ``acquisition`` check-ins must lie in
  ``[window_min_s, window_max_s]``, ``dsp`` must follow its ``acquisition`` within
  ``dsp_max_s``; a check-in early, late, missing, repeated, skipped or out of order trips.
* ``staging`` once per epoch, in order, within ``[staging_min_s, staging_max_s]`` of the
  previous one (``staging_max_s = 0`` leaves it unmonitored).
* ``modulation`` before every stimulus request: a request that no ``modulation`` check-in
  armed (within ``modulation_max_s``) is a flow error; so is arming more than
  ``max_armed`` ahead.

:meth:`AppPort.check_in_many` is the bulk form the simulator uses for blocks it accounts
in bulk: exactly the check-ins the task would make at the given (future) times, verified
one by one in order when they are handed over.

Signal view
-----------
:meth:`SafetyIsland.on_blocks` receives the raw DMA blocks (the island taps the ADC, not
the application's filters) and keeps a minimal detector of its own: lead-off or clipping
flags and a stuck converter on the EEG rows (bad signal), movement on the accelerometer
or a chin-EMG burst (arousal attempts; the EMG is high-passed at 10 Hz and notched at the
mains frequency and its aliases first, because hum on a loose chin lead is not a sleeper
waking up), and heart rate from R peaks on the ECG against a
slow baseline (distress; the peaks are found in the rectified 5-20 Hz QRS band against
half its decaying peak envelope, so an inverted lead, any gain and a wandering baseline
give the same beats). None of it is shared with the application's detectors.

Distress
--------
A stimulus asked for into bad signal or an arousal trips. Into distress it trips only
when the distress *began under stimulation*: a stimulus was delivered within
``stim_active_s`` before it began, so the stimulation may be its cause. The island dates
an episode's beginning from the last calm beat before it (heart rate under baseline +
``hr_rise_bpm / 2``), not from its confirmation five beats later: a stimulus given while
the heart was already racing did not start it. Distress that began without stimulation
may be answered -- nightmare-guard's haptic pulses are made for it -- but not for ever:
distress lasting ``distress_max_s`` with stimulation in it trips as a trapped sleeper,
and the release cue wakes the sleeper, the last resort.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import hmac
import logging
import math
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numba
import numpy as np
from scipy import signal

from firmware.dsp import _sosfilt
from hal.base import Stimulus, Transducer, UserInputError
from hal.interlock import Interlock, Limits, beyond_ceiling, check_limits

logger = logging.getLogger(__name__)

#: Check-in tasks the watchdog knows.
TASKS = ("acquisition", "dsp", "modulation", "staging")

#: Trip causes that come from the sleeper's state: the release routine follows them (S6).
SLEEPER_CAUSES = (
    "wake button",
    "arousal under stimulation",
    "distress under stimulation",
    "trapped sleeper",
)

#: No configuration may let the interlock open later than this after a condition (S2).
T_REACT_CEILING_S = 0.010

#: Bits of the per-block hazard code of the island's signal view.
BAD, AROUSED, DISTRESS = 1, 2, 4
_ADC_BAD_FLAGS = 3  # hal.adc FLAG_CLIPPED | FLAG_LEAD_OFF


@numba.njit(cache=True)
def _block_signs(
    eeg_flags: np.ndarray, eeg: np.ndarray, accel: np.ndarray, n_blocks: int, b: int, accel_g: float
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Per block: bad EEG (an ADC flag on any EEG row, or the first row stuck at one
    code) and movement (an accelerometer sample beyond ``accel_g``; ``accel`` may be empty).

    Why numba: these are reductions over 8-sample blocks, which NumPy does slowly (one
    short inner loop per block) and in several passes; the comparisons are exact, so the
    result is the same.
    """
    bad = np.zeros(n_blocks, dtype=np.bool_)
    act = np.zeros(n_blocks, dtype=np.bool_)
    for j in range(n_blocks):
        lo = j * b
        hit = False
        for r in range(eeg_flags.shape[0]):
            for i in range(lo, lo + b):
                if eeg_flags[r, i] & _ADC_BAD_FLAGS:
                    hit = True
                    break
            if hit:
                break
        if not hit and eeg.shape[0] > 0:
            hi_v = eeg[lo]
            lo_v = eeg[lo]
            for i in range(lo + 1, lo + b):
                hi_v = max(hi_v, eeg[i])
                lo_v = min(lo_v, eeg[i])
            hit = hi_v == lo_v  # a stuck converter repeats one code
        bad[j] = hit
        if accel.shape[0] > 0:
            for i in range(lo, lo + b):
                if abs(accel[i]) > accel_g:
                    act[j] = True
                    break
    return bad, act


@numba.njit(cache=True)
def _r_peak_onsets(
    qrs: np.ndarray, env: float, above: bool, decay: float, floor: float
) -> tuple[np.ndarray, float, bool]:  # pragma: no cover
    """Sample indices where the rectified QRS band ``qrs`` rises above half its decaying
    peak envelope (never below ``floor``), and the envelope and state after it.

    Why a loop: the envelope is a running maximum with decay, one sample after another.
    """
    out = np.empty(qrs.shape[0], dtype=np.int64)
    k = 0
    for i in range(qrs.shape[0]):
        x = qrs[i]
        env = max(x, env * decay)
        now = x > max(floor, 0.5 * env)
        if now and not above:
            out[k] = i
            k += 1
        above = now
    return out[:k], env, above


@dataclass(frozen=True)
class SafetyConfig:
    """The island's configuration: safe defaults, hard ceilings checked at load.

    Parameters
    ----------
    limits : Limits
        Stimulation limits (each below :data:`hal.interlock.HARD_CEILINGS`).
    t_react_s : float
        Bound on the kill latency (at most :data:`T_REACT_CEILING_S`); ``tick_s +
        reaction_s`` must fit in it.
    tick_s, reaction_s : float
        The island's tick and the work from tick to open interlock.
    period_s, window_min_s, window_max_s, dsp_max_s : float
        Heartbeat period of acquisition/dsp and its window (see the module docstring).
    staging_min_s, staging_max_s : float
        Window of the staging check-in (``staging_max_s = 0`` leaves it unmonitored).
    staging_start_s : float
        The first staging window opens from this time (the stager decides an epoch once
        the next one has begun).
    modulation_max_s : float
        Longest time from a ``modulation`` check-in to the request it arms.
    max_armed : int
        Modulation check-ins that may be outstanding (2: Ngo's click pairs).
    breach_trip_count, breach_window_s : int, float
        This many refused (over-limit) requests within the window trip.
    stim_active_s : float
        Stimulation is "going on" this long after a delivered stimulus.
    accel_g, emg_uv : float
        A block with accelerometer magnitude above ``accel_g`` or chin-EMG RMS above
        ``emg_uv`` is activity; activity blocks less than ``arousal_gap_s`` apart form one
        episode (an attempt that lasts ``arousal_min_s`` marks the sleeper aroused).
    attempt_gap_s : float
        Episodes less than this apart are one arousal attempt for the trapped-sleeper
        count: the movement of one arousal comes and goes, and must not count thrice.
    mains_hz : float
        Mains frequency notched (with its aliases) from the chin EMG before its RMS is
        taken: 50 or 60; 0 turns the notches off.
    arousal_min_s : float
        An attempt that lasts this long under stimulation trips.
    trap_attempts, trap_window_s : int, float
        The trapped sleeper: this many attempts within the window while stimulation goes on.
    ecg_threshold_uv, hr_rise_bpm, hr_baseline_beats : float, float, int
        Floor of the R-peak threshold (µV of the rectified QRS band, see
        :func:`ecg_filter`; the threshold is half the decaying peak envelope above it);
        distress is a heart rate this far above the baseline (an average over about
        ``hr_baseline_beats`` beats).
    distress_max_s : float
        Distress lasting past this with stimulation in it trips as a trapped sleeper (the
        last resort for distress that began without stimulation; a stimulus asked for
        into distress that began under stimulation trips at once).
    release_cue : bool
        Play the gentle wake cue (a light ramp) after a trip caused by the sleeper's state.
    release_delay_s, release_steps, release_step_s, release_light_pct : float, int, float, float
        The ramp: ``release_steps`` pulses ``release_step_s`` apart from ``release_delay_s``
        after the trip, up to ``release_light_pct``.
    long_press_s, rearm_holdoff_s : float
        A button held this long re-arms, if the trip is at least ``rearm_holdoff_s`` old.
    """

    limits: Limits = field(default_factory=Limits)
    t_react_s: float = 0.010
    tick_s: float = 0.001
    reaction_s: float = 0.0002
    period_s: float = 1.024
    window_min_s: float = 0.5
    window_max_s: float = 1.6
    dsp_max_s: float = 0.1
    staging_min_s: float = 20.0
    staging_max_s: float = 40.0
    staging_start_s: float = 30.0
    modulation_max_s: float = 2.0
    max_armed: int = 2
    breach_trip_count: int = 3
    breach_window_s: float = 60.0
    stim_active_s: float = 10.0
    accel_g: float = 0.05
    emg_uv: float = 80.0
    mains_hz: float = 50.0
    arousal_gap_s: float = 2.0
    attempt_gap_s: float = 8.0
    arousal_min_s: float = 4.0
    trap_attempts: int = 3
    trap_window_s: float = 120.0
    ecg_threshold_uv: float = 100.0
    hr_rise_bpm: float = 15.0
    hr_baseline_beats: int = 120
    distress_max_s: float = 30.0
    release_cue: bool = True
    release_delay_s: float = 1.0
    release_steps: int = 10
    release_step_s: float = 3.0
    release_light_pct: float = 20.0
    long_press_s: float = 5.0
    rearm_holdoff_s: float = 60.0


#: Ceilings of the island's own parameters (the limits have theirs in hal.interlock).
_CEILINGS: dict[str, float] = {
    "t_react_s": T_REACT_CEILING_S,
    "window_max_s": 5.0,
    "dsp_max_s": 1.0,
    "staging_max_s": 120.0,
    "staging_start_s": 120.0,
    "modulation_max_s": 10.0,
    "max_armed": 4,
    "breach_trip_count": 10,
    "stim_active_s": 60.0,
    "arousal_min_s": 30.0,
    "attempt_gap_s": 60.0,
    "trap_attempts": 10,
    "distress_max_s": 120.0,
    "release_light_pct": 30.0,
    "release_steps": 100,
    "long_press_s": 30.0,
}


def emg_filter(sfreq: float, mains_hz: float) -> np.ndarray:
    """The island's chin-EMG filter at ``sfreq`` Hz: a 10-Hz high-pass and notches at the
    harmonics of ``mains_hz`` (0: none).

    Harmonics above Nyquist fold back (150 Hz hum sampled at 250 Hz lands on 100 Hz), so
    each is notched where it lands. Returns second-order sections.
    """
    sections = [signal.butter(2, 10.0, "highpass", fs=sfreq, output="sos")]
    nyq = sfreq / 2
    landed: set[float] = set()
    for k in range(1, 5) if mains_hz > 0 else ():
        f = abs((k * mains_hz + nyq) % sfreq - nyq)  # where harmonic k lands in [0, nyq]
        if 10.0 < f < 0.98 * nyq and round(f, 3) not in landed:
            landed.add(round(f, 3))
            b, a = signal.iirnotch(f, 30.0, fs=sfreq)
            sections.append(signal.tf2sos(b, a))
    return np.vstack(sections)


#: The island's QRS band (Hz): above baseline wander, breathing and the T wave, below
#: muscle and mains. Its rectified output is judged, so the lead's polarity does not matter.
ECG_QRS_BAND_HZ = (5.0, 20.0)
#: Time constant (s) of the decaying R-peak envelope: two beats' worth, so the threshold
#: follows a changing amplitude within a few beats and a missed beat does not lower it much.
ECG_ENVELOPE_TAU_S = 2.0


def ecg_filter(sfreq: float) -> np.ndarray:
    """The island's ECG filter: a 5-20 Hz band-pass (order 2) as second-order sections,
    for a device rate of ``sfreq`` Hz.

    R peaks are found on its rectified output against an adaptive threshold, not on the
    raw lead against a fixed one: real leads come inverted, at any gain and on a wandering
    baseline, where a fixed upward threshold counts T waves and drift as beats (a false
    'distress' on a calm 56-bpm heart in a DREAMS recording). The upper edge stays below
    the Nyquist frequency of low device rates.
    """
    lo, hi = ECG_QRS_BAND_HZ
    return signal.butter(2, [lo, min(hi, 0.45 * sfreq)], "bandpass", fs=sfreq, output="sos")


def _err(name: str, expected: str, value: object) -> UserInputError:
    return UserInputError(f"Invalid safety setting '{name}': expected {expected}, got {value!r}.")


def check_safety_config(cfg: SafetyConfig) -> SafetyConfig:
    """Refuse a configuration beyond a hard ceiling or inconsistent, naming the field.

    Parameters
    ----------
    cfg : SafetyConfig
        The configuration to check.

    Returns
    -------
    SafetyConfig
        ``cfg`` itself, once checked.

    Raises
    ------
    UserInputError
        One line naming the field, what was expected and what came.
    """
    check_limits(cfg.limits)
    for f in fields(SafetyConfig):
        if f.name == "limits":
            continue
        value = getattr(cfg, f.name)
        if f.name == "release_cue":
            if not isinstance(value, bool):
                raise _err(f.name, "true or false", value)
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _err(f.name, "a number", value)
        low_ok = (
            value >= 0
            if f.name in ("staging_min_s", "staging_max_s", "staging_start_s", "emg_uv", "mains_hz")
            else value > 0
        )
        if not low_ok:
            raise _err(f.name, "a value > 0", value)
        ceiling = _CEILINGS.get(f.name)
        if ceiling is not None and value > ceiling:
            raise _err(f.name, f"a value <= {ceiling} (hard ceiling)", value)
    if cfg.window_min_s >= cfg.window_max_s:
        raise _err(
            "window_min_s", f"a value below window_max_s ({cfg.window_max_s})", cfg.window_min_s
        )
    if not cfg.window_min_s <= cfg.period_s <= cfg.window_max_s:
        raise _err(
            "period_s",
            f"a value in [window_min_s, window_max_s] = [{cfg.window_min_s}, {cfg.window_max_s}]",
            cfg.period_s,
        )
    if cfg.staging_max_s and cfg.staging_min_s >= cfg.staging_max_s:
        raise _err(
            "staging_min_s", f"a value below staging_max_s ({cfg.staging_max_s})", cfg.staging_min_s
        )
    if cfg.tick_s + cfg.reaction_s > cfg.t_react_s:
        raise _err("tick_s", f"tick_s + reaction_s <= t_react_s ({cfg.t_react_s})", cfg.tick_s)
    return cfg


def load_safety_config(spec: str | Path | dict | None) -> SafetyConfig:
    """Build and check a configuration from a TOML file or a dict (None: the defaults).

    Parameters
    ----------
    spec : str or Path or dict or None
        A TOML file with :class:`SafetyConfig` fields (``[limits]`` holds the
        :class:`Limits` fields), the same as a dict, or None for the defaults.

    Returns
    -------
    SafetyConfig
        Checked by :func:`check_safety_config`.

    Raises
    ------
    UserInputError
        An unknown key, a wrong type, a value beyond a ceiling, an unreadable file.
    """
    if spec is None:
        return check_safety_config(SafetyConfig())
    if isinstance(spec, dict):
        data = dict(spec)
    else:
        path = Path(spec)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise UserInputError(
                f"Cannot read safety configuration {str(path)!r}: {err}."
            ) from None
        except tomllib.TOMLDecodeError as err:
            raise UserInputError(
                f"Invalid TOML in safety configuration {str(path)!r}: {err}."
            ) from None
    known = {f.name for f in fields(SafetyConfig)}
    for key in data:
        if key not in known:
            raise UserInputError(
                f"Unknown safety setting {key!r}: allowed settings are {', '.join(sorted(known))}."
            )
    limits = data.pop("limits", {})
    if isinstance(limits, Limits):
        lim = limits
    else:
        names = {f.name for f in fields(Limits)}
        for key in limits:
            if key not in names:
                raise UserInputError(
                    f"Unknown safety limit {key!r}: allowed limits are {', '.join(sorted(names))}."
                )
        lim = Limits(**limits)
    return check_safety_config(SafetyConfig(limits=lim, **data))


def rearm_frame(key: bytes, nonce: int) -> bytes:
    """The host's re-arm command: ``REARM <nonce> <hex HMAC-SHA256(key, 'rearm:<nonce>')>``.

    Parameters
    ----------
    key : bytes
        The board's re-arm key (shared with the host, never with the application).
    nonce : int
        Larger than any nonce used before (a replayed frame is refused).

    Returns
    -------
    bytes
        The frame to send to the island.
    """
    mac = hmac.new(key, f"rearm:{nonce}".encode(), hashlib.sha256).hexdigest()
    return f"REARM {nonce} {mac}".encode()


@dataclass(frozen=True)
class Verdict:
    """The island's answer to a request."""

    delivered: bool
    reason: str


@dataclass
class _Stream:
    """Watchdog state of one periodic check-in stream."""

    seq: int = 0  # sequence number expected next
    last_t: float = 0.0  # island time of the previous check-in (or of the start)
    resync: bool = False  # after a re-arm: accept any later sequence number once


class AppPort:
    """What the application holds: request, check in, read latencies. Nothing else.

    On the board this is a mailbox between the cores; here it forwards to bound methods
    of the island and exposes no attribute leading to the interlock or the transducers.
    """

    __slots__ = (
        "_request",
        "_check_in",
        "_check_in_many",
        "_periods",
        "_latency",
        "_message",
        "_tripped",
    )

    def __init__(self, island: SafetyIsland) -> None:
        self._request = island._on_request
        self._check_in = island._on_check_in
        self._check_in_many = island._on_check_in_many
        self._periods = island._on_check_in_periods
        self._latency = island._latency
        self._message = island._on_app_message
        self._tripped = island._is_tripped

    def request(self, stim: Stimulus, t: float) -> Verdict:
        """Ask for ``stim`` to be emitted now (``t``: the timer's fire time).

        ``delivered`` means the interlock passed it: it is in flight to the transducer
        and reaches it at ``t`` plus the output latency, unless a trip opens the
        interlock before (then it is cut and never reaches the sleeper).
        """
        return self._request(stim, t)

    def check_in(self, task: str, seq: int, t: float) -> None:
        """Check in ``task`` with its sequence number."""
        self._check_in(task, seq, t)

    def check_in_many(self, task: str, first_seq: int, times: Sequence[float]) -> None:
        """The check-ins ``first_seq, first_seq + 1, ...`` of ``task`` at ``times`` (bulk)."""
        self._check_in_many(task, first_seq, times)

    def check_in_periods(
        self, first_seq: int, acquisition_times: Sequence[float], dsp_times: Sequence[float]
    ) -> None:
        """Bulk ``acquisition`` then ``dsp`` check-ins of periods ``first_seq, ...``."""
        self._periods(first_seq, acquisition_times, dsp_times)

    def latency(self, modality: str) -> float:
        """Output latency of the transducer of ``modality`` (for onset compensation)."""
        return self._latency(modality)

    def message(self, frame: bytes, t: float) -> None:
        """Send a frame to the island (status only; commands from here are refused)."""
        self._message(frame, t)

    def tripped(self) -> bool:
        """Whether stimulation is off (so the application can stop asking)."""
        return self._tripped()


class SafetyIsland:
    """The island: sole controller of the interlock.

    Parameters
    ----------
    transducers : dict of str to Transducer
        Handed over to the interlock the island builds; keep no other reference.
    config : SafetyConfig
        Checked here.
    rearm_key : bytes
        The board's re-arm secret.
    roles : sequence of str
        Channel role per row of the blocks :meth:`on_blocks` will see.
    on_output : callable or None
        Passed to the interlock (``on_output(stimulus, t, cue)``).
    sfreq : float
        Nominal sample rate (to number the release cue's onset sample).
    clock_offset_s, clock_ppm : float
        Phase of the island's tick grid and its oscillator's error.
    """

    def __init__(
        self,
        transducers: dict[str, Transducer],
        config: SafetyConfig | None = None,
        rearm_key: bytes = b"",
        roles: Sequence[str] = ("eeg",),
        on_output: Callable[[Stimulus, float, bool], None] | None = None,
        sfreq: float = 250.0,
        clock_offset_s: float = 0.0,
        clock_ppm: float = 0.0,
    ) -> None:
        self.config = cfg = check_safety_config(config or SafetyConfig())
        self._lock = Interlock(transducers, on_output)
        self._key = bytes(rearm_key)
        self._sfreq = float(sfreq)
        self._offset = float(clock_offset_s) % cfg.tick_s
        self._scale = 1.0 + clock_ppm * 1e-6  # island seconds per true second
        roles = list(roles)
        self._eeg = [i for i, r in enumerate(roles) if r == "eeg"]
        self._emg = roles.index("emg") if "emg" in roles else None
        self._ecg = roles.index("ecg") if "ecg" in roles else None
        self._acc = roles.index("accel") if "accel" in roles else None
        self._emg_sos = emg_filter(self._sfreq, cfg.mains_hz)
        self._emg_zi = np.zeros((self._emg_sos.shape[0], 1, 2))
        self._ecg_sos = ecg_filter(self._sfreq)
        self._ecg_zi = np.zeros((self._ecg_sos.shape[0], 1, 2))
        self._ecg_env = 0.0  # decaying peak envelope of the rectified QRS band
        self._ecg_decay = math.exp(-1.0 / (ECG_ENVELOPE_TAU_S * self._sfreq))
        self.log: list[dict] = []
        self.trips: list[dict] = []
        self.stopped = False
        self._pending: tuple[float, str, float] | None = None  # (open_t, cause, since)
        self._tripped = False
        self._trip_t = -math.inf
        self._cues: collections.deque[tuple[float, Stimulus]] = collections.deque()
        self._last_nonce = -1
        self._button_down: float | None = None
        # Watchdog.
        self._period = _Stream()
        self._acq_t = 0.0
        self._dsp_due = math.inf
        self._staging = _Stream(last_t=cfg.staging_start_s)
        self._mod_seq = 0
        self._mod_resync = False
        self._armed: collections.deque[tuple[int, float]] = collections.deque()
        # Limits.
        self._delivered_t: collections.deque[float] = collections.deque()
        self.delivered_count = 0
        self._breaches: collections.deque[float] = collections.deque()
        self._last_stim_t = -math.inf
        self._stim_times: list[float] = []  # delivered, for "stimulation in this episode"
        # Signal view: the hazard code of the latest arrived blocks (times, codes).
        self._h_times = np.zeros(0)
        self._h_codes = np.zeros(0, dtype=np.int8)
        self._prev_code = 0
        self._ep_start = -math.inf  # current activity episode
        self._ep_last = -math.inf
        self._att_last = -math.inf  # last activity of the current attempt
        self._att_counted = False
        self._attempts: collections.deque[float] = collections.deque()
        self._beat_prev: float | None = None
        self._rr: collections.deque[float] = collections.deque(maxlen=5)
        self._hi_beats = 0
        self._hr_base: float | None = None
        self._n_beats = 0
        self._distress_since: float | None = None
        # When the heart was last calm (under baseline + hr_rise_bpm / 2): distress is dated
        # from there, not from its confirmation 5 beats later.
        self._calm_t: float | None = None
        # Recent distress episodes as (confirmed at, began at), for the request rule.
        self._distress_eps: collections.deque[tuple[float, float]] = collections.deque(maxlen=16)
        self._ecg_above = False
        self._last_block_t = -math.inf

    # ------------------------------------------------------------------ the outside world
    def port(self) -> AppPort:
        """The application's only handle on the island."""
        return AppPort(self)

    @property
    def tripped(self) -> bool:
        """Latched open (or a trip is due)."""
        return self._tripped or self._pending is not None

    @property
    def interlock_open(self) -> bool:
        """State of the interlock (read-only view for the record and the proofs)."""
        return self._lock.is_open

    @property
    def outputs(self):
        """What reached the transducers (:class:`hal.interlock.Output`), for the record."""
        return list(self._lock.outputs)

    def was_open(self, t: float) -> bool:
        """Whether the interlock was open at ``t``."""
        return self._lock.was_open(t)

    def settle(self, t: float) -> None:
        """The transducers' side at ``t``: pulses in flight whose onset has come reach their
        transducers (and the world, through ``on_output``); those cut by an opening in
        flight never do. The driver of time calls it at each onset (it is hardware: it
        needs nothing from the island's timer)."""
        self._lock.settle(t)

    def was_cut(self, stim: Stimulus) -> bool:
        """Whether ``stim`` (a granted request, by identity) was cut in flight."""
        return self._lock.was_cut(stim)

    def stop(self) -> None:
        """End of the night: the timer stops (nothing is monitored any more)."""
        self.stopped = True

    def host_command(self, frame: bytes, t: float) -> bool:
        """A command from the host link: ``KILL`` or a re-arm frame (:func:`rearm_frame`).

        Returns whether it was accepted. Malformed, forged and replayed re-arms are
        refused and logged.
        """
        self.poll(t)
        text = frame.decode("ascii", errors="replace").strip()
        if text == "KILL":
            self._condition("host kill", t)
            self.poll(t)
            return True
        parts = text.split(" ")
        if len(parts) != 3 or parts[0] != "REARM" or not parts[1].isdigit() or len(parts[1]) > 18:
            self._refuse_rearm(t, "malformed")
            return False
        nonce = int(parts[1])
        good = hmac.compare_digest(rearm_frame(self._key, nonce), text.encode())
        if not good:
            self._refuse_rearm(t, "bad token")
            return False
        if nonce <= self._last_nonce:
            self._refuse_rearm(t, "replayed")
            return False
        self._last_nonce = nonce
        self._rearm(t, "host")
        return True

    def button(self, down: bool, t: float) -> None:
        """The wake button: a press trips; held ``long_press_s`` (after the hold-off) re-arms."""
        self.poll(t)
        if down and self._button_down is None:
            self._button_down = t
            self._condition("wake button", t)
            self.poll(t)
        elif not down:
            self._button_down = None

    # ------------------------------------------------------------------ the timer
    def next_wake(self) -> float:
        """When the island's timer must fire next (``inf``: nothing due)."""
        if self.stopped:
            return math.inf
        times = [math.inf]
        if self._pending is not None:
            times.append(self._pending[0])
        if self._cues:
            times.append(self._cues[0][0])
        if self._button_down is not None:
            times.append(self._long_press_t())
        if not self._tripped:
            times.append(self._true(self._period.last_t + self.config.window_max_s))
            times.append(self._dsp_due)
            if self.config.staging_max_s:
                times.append(self._true(self._staging.last_t + self.config.staging_max_s))
            if self._armed:
                times.append(self._armed[0][1])
        return min(times)

    def next_output_time(self) -> float:
        """Time of the next output the island will make itself (release cue), or ``inf``."""
        return self._cues[0][0] if self._cues else math.inf

    def poll(self, t: float) -> None:
        """Do everything due up to ``t``, each at its own time (the timer's handler)."""
        if self.stopped:
            return
        cfg = self.config
        while True:
            due = self.next_wake()
            if due > t:
                return
            if self._pending is not None and self._pending[0] <= due:
                self._execute_trip(t)
            elif self._cues and self._cues[0][0] <= due:
                when, stim = self._cues.popleft()
                self._lock.cue(stim, when)
            elif self._button_down is not None and self._long_press_t() <= due:
                held_from = self._button_down
                self._button_down = None  # one re-arm per press
                if self._tripped and due - self._trip_t >= cfg.rearm_holdoff_s:
                    self._rearm(due, "button")
                else:
                    self._refuse_rearm(due, "long press too early", held_from=held_from)
            else:
                self._watchdog_expired(due)

    # ------------------------------------------------------------------ trips
    def _true(self, island_t: float) -> float:
        return island_t / self._scale

    def _island(self, t: float) -> float:
        return t * self._scale

    def _handle_time(self, since: float) -> float:
        tick = self.config.tick_s / self._scale
        n = math.ceil((since - self._offset) / tick - 1e-9)
        return max(since, self._offset + n * tick) + self.config.reaction_s

    def _condition(self, cause: str, since: float) -> None:
        """A trip condition holds from ``since``: open at the next tick."""
        if self._tripped:
            return
        open_t = self._handle_time(since)
        if self._pending is None or open_t < self._pending[0]:
            self._pending = (open_t, cause, since)

    def _execute_trip(self, now: float) -> None:
        """Open the interlock for the pending trip; ``now`` is when this actually runs (the
        poll's time), recorded beside the scheduled ``opened_t`` so a late timer shows."""
        assert self._pending is not None
        open_t, cause, since = self._pending
        self._pending = None
        self._lock.open(open_t, now=now)
        self._tripped = True
        self._trip_t = open_t
        self._armed.clear()
        event = {
            "kind": "safety",
            "t": open_t,
            "event": "trip",
            "cause": cause,
            "condition_since": since,
            "opened_t": open_t,
            "acted_t": now,
        }
        self.log.append(event)
        self.trips.append(event)
        logger.info("safety island tripped at %.4f s: %s (since %.4f s)", open_t, cause, since)
        cfg = self.config
        if (
            cfg.release_cue
            and cause.split(":")[0] in SLEEPER_CAUSES
            and "light" in self._lock.modalities
        ):
            self.log.append(
                {
                    "kind": "safety",
                    "t": open_t,
                    "event": "release",
                    "cue": "light ramp",
                    "steps": cfg.release_steps,
                }
            )
            for k in range(cfg.release_steps):
                when = open_t + cfg.release_delay_s + k * cfg.release_step_s
                level = cfg.release_light_pct * (k + 1) / cfg.release_steps
                stim = Stimulus(round(when * self._sfreq), "light", level, 0.5, "release")
                self._cues.append((when, stim))

    def _rearm(self, t: float, via: str) -> None:
        if not self._tripped:
            self.log.append({"kind": "safety", "t": t, "event": "rearm", "via": via, "noop": True})
            return
        self._tripped = False
        self._pending = None
        self._cues.clear()
        self._lock.close(t)
        it = self._island(t)
        # The watchdog starts over from the re-arm: the next check-in may carry any later
        # sequence number (the application went on counting while it was cut off).
        self._period.last_t = it
        self._period.resync = True
        self._dsp_due = math.inf
        self._staging.last_t = it
        self._staging.resync = True
        self._mod_resync = True
        self._breaches.clear()
        self._attempts.clear()
        self._distress_since = None
        self.log.append({"kind": "safety", "t": t, "event": "rearm", "via": via})
        logger.info("safety island re-armed at %.4f s (%s)", t, via)

    def _refuse_rearm(self, t: float, reason: str, **extra: object) -> None:
        self.log.append(
            {"kind": "safety", "t": t, "event": "rearm_refused", "reason": reason, **extra}
        )
        logger.warning("re-arm refused at %.4f s: %s", t, reason)

    def _is_tripped(self) -> bool:
        return self._tripped

    def _latency(self, modality: str) -> float:
        return self._lock.latency(modality)

    def _long_press_t(self) -> float:
        assert self._button_down is not None
        return self._button_down + self.config.long_press_s

    # ------------------------------------------------------------------ watchdog
    def _watchdog_expired(self, due: float) -> None:
        cfg = self.config
        if self._dsp_due <= due:
            self._dsp_due = math.inf
            self._condition("watchdog: dsp missing", due)
        elif self._armed and self._armed[0][1] <= due:
            self._armed.popleft()
            self._condition("watchdog: modulation without request", due)
        elif cfg.staging_max_s and self._true(self._staging.last_t + cfg.staging_max_s) <= due:
            self._staging.last_t = self._island(due)  # one trip is enough
            self._condition("watchdog: staging missing", due)
        else:
            self._period.last_t = self._island(due)
            self._condition("watchdog: acquisition missing", due)

    def _on_check_in(self, task: str, seq: int, t: float) -> None:
        self.poll(t)
        self._check(task, seq, t)
        self.poll(t)

    def _on_check_in_many(self, task: str, first_seq: int, times: Sequence[float]) -> None:
        # Each check-in is verified at its own time; the bulk form only saves calls.
        for k, t in enumerate(times):
            if self._tripped:
                return
            self._check(task, first_seq + k, float(t))

    def _on_check_in_periods(
        self, first_seq: int, acq_times: Sequence[float], dsp_times: Sequence[float]
    ) -> None:
        for k, (ta, td) in enumerate(zip(acq_times, dsp_times, strict=True)):
            if self._tripped:
                return
            self._check("acquisition", first_seq + k, float(ta))
            self._check("dsp", first_seq + k, float(td))

    def _check(self, task: str, seq: int, t: float) -> None:
        if self._tripped:
            return
        cfg = self.config
        it = self._island(t)
        if task == "acquisition":
            st = self._period
            if self._dsp_due != math.inf:
                return self._condition("watchdog: acquisition before dsp", t)
            if not self._in_window(
                st, "acquisition", seq, it, t, cfg.window_min_s, cfg.window_max_s
            ):
                return
            self._acq_t = it
            self._dsp_due = self._true(it + cfg.dsp_max_s)
        elif task == "dsp":
            if self._dsp_due == math.inf or seq != self._period.seq - 1:
                return self._condition(f"watchdog: dsp out of order ({seq})", t)
            if t > self._dsp_due:
                return self._condition("watchdog: dsp late", t)
            self._dsp_due = math.inf
        elif task == "staging":
            st = self._staging
            if not cfg.staging_max_s:
                return
            self._in_window(st, "staging", seq, it, t, cfg.staging_min_s, cfg.staging_max_s)
        elif task == "modulation":
            if self._mod_resync and isinstance(seq, int | np.integer) and seq >= self._mod_seq:
                self._mod_seq = int(seq)
                self._mod_resync = False
            if seq != self._mod_seq:
                return self._condition(f"watchdog: modulation out of order ({seq})", t)
            if len(self._armed) >= cfg.max_armed:
                return self._condition("watchdog: modulation flood", t)
            self._mod_seq += 1
            self._armed.append((seq, t + cfg.modulation_max_s))
        else:
            self._condition("watchdog: unknown check-in", t)

    def _in_window(
        self, st: _Stream, task: str, seq: int, it: float, t: float, lo: float, hi: float
    ) -> bool:
        """The windowed, ordered check-in of a periodic task (island time ``it``); a
        check-in out of order, early or late trips. True when it was in order and in time."""
        if not self._seq_ok(st, seq):
            self._condition(f"watchdog: {task} out of order ({seq})", t)
            return False
        gap = it - st.last_t
        if gap < lo and not st.resync:
            self._condition(f"watchdog: {task} early", t)
            return False
        if gap > hi:
            self._condition(f"watchdog: {task} late", t)
            return False
        st.resync = False
        st.last_t = it
        return True

    @staticmethod
    def _seq_ok(st: _Stream, seq: int) -> bool:
        if isinstance(seq, bool) or not isinstance(seq, int | np.integer):
            return False
        ok = seq >= st.seq if st.resync else seq == st.seq
        if ok:
            st.seq = int(seq) + 1
        return ok

    def _on_app_message(self, frame: bytes, t: float) -> None:
        # Nothing the application says is a command: a re-arm or kill frame from it is
        # refused (kill from the application is harmless but has its own path: a trip
        # through a flow error would do; we log and ignore).
        self.poll(t)
        text = bytes(frame)[:16].decode("ascii", errors="replace")
        if text.startswith("REARM"):
            self._refuse_rearm(t, "from the application")

    # ------------------------------------------------------------------ requests
    def _on_request(self, stim: Stimulus, t: float) -> Verdict:
        self.poll(t)
        if self._tripped or self._pending is not None:
            return Verdict(False, "interlock open")
        if not self._armed or self._armed[0][1] < t:
            self._condition("watchdog: request without modulation check-in", t)
            self.poll(t)
            return Verdict(False, "interlock open")
        self._armed.popleft()
        breach = self._breach(stim, t)
        if breach is not None:
            self.log.append({"kind": "safety", "t": t, "event": "limit", "limit": breach})
            logger.debug("refused stimulus at %.3f s: %s", t, breach)
            cfg = self.config
            self._breaches.append(t)
            while self._breaches and self._breaches[0] <= t - cfg.breach_window_s:
                self._breaches.popleft()
            if len(self._breaches) >= cfg.breach_trip_count:
                self._condition("repeated limit breach", t)
                self.poll(t)
            return Verdict(False, f"limit: {breach}")
        # The sleeper's state now: a stimulus into bad signal or an arousal trips; into
        # distress only when stimulation was going on as the distress began (it may be the
        # cause). Distress that began without stimulation may be answered (nightmare-guard
        # pulses); if it lasts distress_max_s with stimulation in it, the trapped-sleeper
        # rule trips and the release cue wakes the sleeper: the last resort.
        code = self._code_at(t)
        if code & DISTRESS and not self._distress_began_under_stimulation(t):
            code &= ~DISTRESS
        if code:
            self._condition(self._cause_of(code), t)
            self.poll(t)
            return Verdict(False, "interlock open")
        if not self._lock.emit(stim, t):
            return Verdict(False, "interlock refused")
        # Counted at its onset at the transducer (what the per-minute limit is about), and
        # counted even if an opening cuts it in flight: the safe side.
        self._delivered_t.append(t + self._lock.latency(stim.modality))
        self.delivered_count += 1
        self._last_stim_t = t
        self._stim_times.append(t)
        return Verdict(True, "ok")

    def _breach(self, stim: Stimulus, t: float) -> str | None:
        lim = self.config.limits
        if stim.modality not in self._lock.modalities:
            return f"no {stim.modality} transducer"
        over = beyond_ceiling(stim, lim)
        if over is not None:
            return over
        onset = t + self._lock.latency(stim.modality)
        while self._delivered_t and self._delivered_t[0] <= onset - 60.0:
            self._delivered_t.popleft()
        if len(self._delivered_t) >= lim.max_per_minute:
            return f"max_per_minute {lim.max_per_minute} reached"
        if self.delivered_count >= lim.max_per_night:
            return f"max_per_night {lim.max_per_night} reached"
        return None

    # ------------------------------------------------------------------ signal view
    @staticmethod
    def _cause_of(code: int) -> str:
        if code & DISTRESS:
            return "distress under stimulation"
        if code & AROUSED:
            return "arousal under stimulation"
        return "bad signal under stimulation"

    def _code_at(self, t: float) -> int:
        """Hazard code of the latest block arrived at or before ``t``."""
        j = int(np.searchsorted(self._h_times, t, side="right")) - 1
        return int(self._h_codes[j]) if j >= 0 else self._prev_code

    def _distress_began_under_stimulation(self, t: float) -> bool:
        """Whether the distress episode going on at ``t`` began while stimulation went on.

        The episode began at the last calm beat before its confirmation; a delivered
        stimulus within ``stim_active_s`` before that moment (or at it) means stimulation
        was going on. An episode the island cannot date counts as begun under stimulation.
        """
        began = None
        for since, start in self._distress_eps:
            if since <= t:
                began = start
        if began is None:
            return True
        k = bisect.bisect_left(self._stim_times, began - self.config.stim_active_s)
        return k < len(self._stim_times) and self._stim_times[k] <= began

    def _active(self, t: float) -> bool:
        return t - self._last_stim_t < self.config.stim_active_s

    def on_blocks(self, start: int, data: np.ndarray, flags: np.ndarray, times: np.ndarray) -> int:
        """Look at DMA blocks as they arrive (the island's own tap on the ADC).

        Parameters
        ----------
        start : int
            Index of the first sample (for the record).
        data : ndarray, shape (n_channels, n)
            µV for biopotentials, g for the accelerometer; ``n`` whole blocks.
        flags : ndarray of uint8
            ADC flags, same shape.
        times : ndarray, shape (n_blocks,)
            Arrival time of each block (its last sample), increasing.

        Returns
        -------
        int
            Samples up to the end of the first block at which a trip became due (all of
            them when none): a driver that reads ahead should not go past it.
        """
        n_blocks = times.size
        if n_blocks == 0 or self.stopped:
            return data.shape[1]
        b = data.shape[1] // n_blocks
        cfg = self.config
        codes = np.zeros(n_blocks, dtype=np.int8)
        none = np.empty(0)
        bad, act = _block_signs(
            flags[self._eeg] if self._eeg else np.zeros((0, 0), dtype=np.uint8),
            data[self._eeg[0]] if self._eeg else none,
            data[self._acc] if self._acc is not None else none,
            n_blocks,
            b,
            cfg.accel_g,
        )
        if self._eeg:
            codes[bad] |= BAD
        if self._emg is not None and cfg.emg_uv > 0:
            e, self._emg_zi = _sosfilt(self._emg_sos, data[self._emg][None, :], self._emg_zi)
            e = e.reshape(n_blocks, b)
            act |= np.einsum("ij,ij->i", e, e) > cfg.emg_uv**2 * b
        if act.any():
            self._episodes(times, act, codes)
        if self._ecg is not None:
            self._heart(data[self._ecg], times, b, codes)
        if self._h_codes.size:
            self._prev_code = int(self._h_codes[-1])
        self._h_times, self._h_codes = times, codes
        self._last_block_t = float(times[-1])
        if self._pending is not None:
            k = int(np.searchsorted(times, self._pending[2], side="left"))
            if k < n_blocks:
                return (k + 1) * b
        return data.shape[1]

    def _episodes(self, times: np.ndarray, act: np.ndarray, codes: np.ndarray) -> None:
        """Group activity blocks into arousal attempts; mark aroused blocks; count attempts."""
        cfg = self.config
        idx = np.flatnonzero(act)
        for j in idx.tolist():
            t = float(times[j])
            if t - self._ep_last > cfg.arousal_gap_s:  # a new episode
                self._ep_start = t
            self._ep_last = t
            if t - self._att_last > cfg.attempt_gap_s:  # a new attempt
                self._att_counted = False
            self._att_last = t
            if not self._att_counted and self._stim_going_on(t):
                self._att_counted = True
                self._attempts.append(t)
                while self._attempts and self._attempts[0] <= t - cfg.trap_window_s:
                    self._attempts.popleft()
                if len(self._attempts) >= cfg.trap_attempts:
                    self._condition("trapped sleeper", t)
            if t - self._ep_start >= cfg.arousal_min_s:
                codes[j] |= AROUSED
                # Between activity blocks of one attempt the sleeper is still aroused.
                k = j + 1
                while k < act.size and not act[k] and float(times[k]) - t <= cfg.arousal_gap_s:
                    codes[k] |= AROUSED
                    k += 1

    def _stim_going_on(self, t: float) -> bool:
        return self._active(t)

    def _heart(self, ecg: np.ndarray, times: np.ndarray, b: int, codes: np.ndarray) -> None:
        """R peaks (:func:`ecg_filter`, :func:`_r_peak_onsets`), heart rate against a slow
        baseline."""
        cfg = self.config
        qrs, self._ecg_zi = _sosfilt(self._ecg_sos, ecg[None, :], self._ecg_zi)
        rise, self._ecg_env, self._ecg_above = _r_peak_onsets(
            np.abs(qrs[0]), self._ecg_env, self._ecg_above, self._ecg_decay, cfg.ecg_threshold_uv
        )
        state = was = self._distress_since is not None
        changes: list[int] = []  # block indices where the distress state flips
        for s in rise.tolist():
            t = float(times[s // b])
            prev = self._beat_prev
            if prev is not None and t - prev < 0.33:  # refractory: one beat, not its T wave
                continue
            self._beat_prev = t
            if prev is None:
                continue
            rr = t - prev
            if rr > 2.5:  # a gap (lead-off, lost beats): start over
                self._rr.clear()
                continue
            self._rr.append(rr)
            if len(self._rr) < (self._rr.maxlen or 1):
                continue
            # The median interval: one missed or extra beat does not move it.
            hr = 60.0 / sorted(self._rr)[len(self._rr) // 2]
            self._n_beats += 1
            if self._hr_base is None:
                self._hr_base = hr
            high = self._n_beats > 30 and hr > self._hr_base + cfg.hr_rise_bpm
            self._hi_beats = self._hi_beats + 1 if high else 0
            distressed = self._hi_beats >= 5
            if not distressed and not state:
                # The baseline follows the calm heart only, so distress cannot raise it.
                self._hr_base += (hr - self._hr_base) / cfg.hr_baseline_beats
                if hr < self._hr_base + cfg.hr_rise_bpm / 2:
                    self._calm_t = t
            if distressed and not state:
                state = True
                self._distress_since = t
                began = t if self._calm_t is None else self._calm_t
                self._distress_eps.append((t, began))
                changes.append(s // b)
            elif state and hr < self._hr_base + cfg.hr_rise_bpm / 2:
                state = False
                self._distress_since = None
                changes.append(s // b)
        cur, pos = was, 0
        for j in changes:
            if cur:
                codes[pos:j] |= DISTRESS
            cur, pos = not cur, j
        if cur:
            codes[pos:] |= DISTRESS
        since = self._distress_since
        if since is not None:
            # Distress lasting past distress_max_s with stimulation in it: trapped.
            k = bisect.bisect_left(self._stim_times, since - cfg.stim_active_s)
            if k < len(self._stim_times):
                when = max(since + cfg.distress_max_s, self._stim_times[k])
                if when <= float(times[-1]):
                    self._condition("trapped sleeper", max(when, float(times[0])))


def default_island(
    transducers: dict[str, Transducer],
    config: SafetyConfig | None,
    rearm_key: bytes,
    roles: Sequence[str],
    **kwargs: object,
) -> SafetyIsland:
    """Build the island with ``config`` (None: defaults) — the one constructor the runner uses."""
    return SafetyIsland(transducers, config, rearm_key, roles, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "AppPort",
    "SafetyConfig",
    "SafetyIsland",
    "Verdict",
    "check_safety_config",
    "load_safety_config",
    "rearm_frame",
]

"""The virtual sleeper: a seeded, streaming generator of a night of headband signals.

A :class:`VirtualSleeper` is a :class:`hal.base.SignalSource` (it delivers samples) and a
:class:`hal.base.WorldHook` (it hears stimuli and reports ground truth). It is a
*person generator*: the seed draws a person (alpha frequency, spindle frequency and
density, slow-oscillation amplitude, heart rate, muscle tone...) and a night (hypnogram,
arousals, artifacts), then the signals are synthesised on demand, 30-s tile by 30-s tile.

Model
-----
Background EEG is Gaussian noise with a per-stage power spectrum: an aperiodic 1/f^chi
component (steeper in deep sleep; Gao et al. 2017, NeuroImage 158:70; Lendner et al. 2020,
eLife 9:e55092) plus the stage rhythms — posterior alpha in relaxed wake, theta in N1 and
REM, delta in N3. The spectra are corrected so that YASA's relative band powers per stage
(0.4-1, 1-4, 4-8, 8-12, 12-16, 16-30 Hz) sit where they sit in real PSG (C4-M1, healthy
adults; values checked against the DREAMS excerpts and the spectra in Iber et al., AASM
manual, and Brunner et al. 1996, Sleep 19:111 for the stage-to-stage differences).
Transients are drawn as events with templates and physiological ranges (AASM manual v2.6
definitions): vertex waves in N1, spindles (11-16 Hz, 0.5-2 s, waxing-waning; density 2-6
per min, De Gennaro & Ferrara 2003, Sleep Med Rev 7:423) and K-complexes in N2, slow
oscillations (0.5-1.25 Hz, 100-250 uV peak-to-peak at C4, frontal predominance; Massimini
et al. 2004, J Neurosci 24:6862) with spindles nested in their up-state (Staresina et al.
2015, Nat Neurosci 18:1679) in N3, sawtooth waves and rapid eye movements in REM. Chin EMG
tone falls from wake to NREM and is lowest in REM (atonia) with phasic twitches. Heart
rate falls and becomes regular in N3 and is variable in REM (Trinder et al. 2001, J Sleep
Res 10:253), with respiratory sinus arrhythmia. The accelerometer reads magnitude minus
1 g: ~0 at rest, movement in wake, at arousals and with motion artifacts.

Around that sit the planned events (all O(epochs), drawn from the seed): spontaneous
arousals (3-12 s of alpha/beta, damped sleep EEG, chin EMG burst, movement; about 5 per
hour of sleep, fewest in N3), rare nightmare episodes in late REM (heart rate +18 bpm,
rising and falling over 12 s, 2.5x the atonic chin EMG and more twitches, one to three
arousal attempts; ``nightmares=N`` plants N of them in the night's REM instead, for tests
and benches) and, with ``artifacts=True``,
about one artifact per hour (electrode pop, motion, 50 Hz line noise, saturation beyond
the ADC range, lead-off as NaN). Each is a world event.

Realism is checked by YASA's pre-trained stager (``bench/realism.py``): on 8-h nights it
agrees with the generating hypnogram on >90 % of epochs (N1 is its weak stage, as on real
PSG).

Streaming
---------
Only O(epochs) things are precomputed (hypnogram, arousals, artifacts, per-epoch heart
rate). Samples are made per 30-s tile from a generator seeded by
``SeedSequence([seed, stream, tile])``, so any tile can be rebuilt from the seed alone;
a few tiles are cached, so memory is O(tile) whatever the night's length. Noise is shaped
in the frequency domain (one inverse FFT per channel group and tile).
Noise of neighbouring tiles is cross-faded with power-complementary (sin/cos) windows over
2 s, so variance is kept and there is no step at tile edges; transient events may spill
into the next tile and are added there. Heart beats come from a continuous phase
function, so R-R intervals run on across tiles.

Stimuli
-------
See :meth:`VirtualSleeper.stimulate` for the response model (Ngo et al. 2013, Neuron
78:545). Responses are overlays on samples at or after the stimulus onset; the base night
is unchanged, so a re-read after a stimulus sees the response and a re-read without new
stimuli is bit-identical.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import numba
import numpy as np
from scipy.fft import irfft as _irfft

from hal.base import DEFAULT_SFREQ, STAGES, ChannelSpec, SourceInfo, Stimulus, UserInputError
from sim.hypnogram import EPOCH_S, generate_hypnogram, normalize_stage

logger = logging.getLogger(__name__)

__all__ = ["CHANNELS", "MAX_HOURS", "MIN_HOURS", "Person", "VirtualSleeper", "parse_hours"]

#: Longest virtual night, in hours.
MAX_HOURS = 24.0
#: Shortest virtual night: one 30-s epoch (1/120 h). Nothing shorter can be staged.
MIN_HOURS = EPOCH_S / 3600.0
#: :data:`MIN_HOURS` as messages show it, rounded up so that the number shown is accepted.
MIN_HOURS_TEXT = f"{math.ceil(MIN_HOURS * 1e5) / 1e5:g}"


def parse_hours(value: object, where: str = "") -> float:
    """The length of a virtual night in hours, from a number or its text.

    Parameters
    ----------
    value : object
        Hours, as a number or a string (``"0.5"``).
    where : str
        Where the value was read, for the message (``" in sleeper://"``).

    Returns
    -------
    float

    Raises
    ------
    UserInputError
        Not a number, or a night shorter than one 30-s epoch (0.00834 h) or longer than
        24 h; the one-line message says what is allowed and what came.
    """
    try:
        if isinstance(value, bool):
            raise ValueError
        hours = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except ValueError:
        hours = math.nan
    # A microsecond of slack: 1/120 h written as a decimal may land a hair under 30 s.
    if not (hours * 3600.0 >= EPOCH_S - 1e-6 and hours <= MAX_HOURS):  # NaN fails too
        got = repr(value)
        if 0.0 < hours * 3600.0 < EPOCH_S:
            got += f" ({hours * 3600.0:g} s)"
        raise UserInputError(
            f"Invalid value for 'hours'{where}: allowed is a number of hours in "
            f"[{MIN_HOURS_TEXT}, {MAX_HOURS:g}] (a night of at least one {EPOCH_S:g}-s epoch: "
            f"{EPOCH_S:g} s = {MIN_HOURS_TEXT} h), got {got}."
        )
    return hours


#: Channels of the virtual headband, EEG first. Names are data; callers pick by role.
CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("C4-M1", "eeg"),
    ChannelSpec("Fpz-M2", "eeg"),
    ChannelSpec("E1-M2", "eog"),
    ChannelSpec("Chin", "emg"),
    ChannelSpec("ECG", "ecg"),
    ChannelSpec("Accel", "accel"),
)
_C4, _FPZ, _E1, _CHIN, _ECG, _ACC = range(6)
#: Row unit of the internal tile buffers -> volts (uV for ExG, mV for ECG, g for Accel).
_TO_OUT = np.array([1e-6, 1e-6, 1e-6, 1e-6, 1e-3, 1.0])

# Seed streams: each kind of randomness has its own SeedSequence branch so that, e.g.,
# turning artifacts off does not change the hypnogram or the EEG.
_S_PERSON, _S_HYPNO, _S_PLAN, _S_HEART, _S_TILE, _S_OVERLAY, _S_STIM, _S_NIGHTMARE = range(8)

#: YASA's bands (Hz), used to shape the spectra.
_BANDS = ((0.4, 1.0), (1.0, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, 16.0), (16.0, 30.0))

#: Relative band power of the C4-M1 *background* per stage (same order as ``_BANDS``).
#: Events (spindles, K-complexes, slow oscillations, sawtooth waves) add on top.
_REL_POWER = {
    "W": (0.11, 0.19, 0.14, 0.32, 0.09, 0.15),
    "N1": (0.12, 0.27, 0.33, 0.09, 0.07, 0.12),
    "N2": (0.18, 0.46, 0.19, 0.09, 0.055, 0.02),
    "N3": (0.14, 0.64, 0.12, 0.05, 0.03, 0.02),
    "R": (0.12, 0.30, 0.30, 0.12, 0.07, 0.09),
}
#: Background standard deviation of C4-M1 in 0.4-30 Hz (uV), before person scaling.
_BG_STD = {"W": 14.0, "N1": 11.0, "N2": 15.0, "N3": 30.0, "R": 10.5}
#: Chin EMG broadband RMS (uV): tone falls into sleep, lowest in REM (atonia).
_EMG_RMS = {"W": 16.0, "N1": 6.5, "N2": 5.0, "N3": 4.5, "R": 1.6}
#: Heart-rate offset (bpm) from the person's sleeping baseline, and its epoch-to-epoch SD.
_HR_OFFSET = {"W": 8.0, "N1": 4.0, "N2": 0.0, "N3": -3.0, "R": 4.0}
_HR_SD = {"W": 3.0, "N1": 2.0, "N2": 1.0, "N3": 0.5, "R": 3.5}
#: Spontaneous arousal probability per 30-s epoch (about 5 per hour of sleep in total).
_AROUSAL_P = {"W": 0.0, "N1": 0.06, "N2": 0.045, "N3": 0.012, "R": 0.05}
#: How strongly a sound can wake the sleeper from each stage (arousal thresholds are
#: lowest in N1/N2 and highest in N3; Rechtschaffen et al. 1966; Bonnet 1986).
_AROUSAL_SENS = {"W": 0.0, "N1": 1.0, "N2": 0.6, "N3": 0.15, "R": 0.4}
#: How much of an evoked slow oscillation each stage supports.
_EVOKED_GAIN = {"W": 0.0, "N1": 0.15, "N2": 0.7, "N3": 1.0, "R": 0.1}
#: Nightmare heart-rate excess (bpm) and the time (s) it takes to rise, and to fall at the end.
_NM_HR_BPM = 18.0
_NM_RAMP_S = 12.0
#: Extra chin EMG in a nightmare: the atonic REM tone times this factor (as RMS), and the
#: extra phasic twitches per 30 s on top of REM's own.
_NM_EMG_FACTOR = 2.5
_NM_TWITCHES = 4.5
#: Haptic pulse during a nightmare (modelling assumption, see :meth:`VirtualSleeper.stimulate`):
#: logistic in the drive (percent) -- half-effect point and slope -- for ending the
#: nightmare and for waking the sleeper.
_HAPTIC_END_HALF, _HAPTIC_END_SLOPE = 35.0, 7.0
_HAPTIC_WAKE_HALF, _HAPTIC_WAKE_SLOPE = 70.0, 7.0
#: Sleep onset helped by alpha-phase-locked sound (modelling assumption, see
#: :meth:`VirtualSleeper.stimulate`, 5): seconds of the wake/N1 stretch before the first
#: sleep epoch removed per pulse at the favoured alpha phase (times the cosine of the phase
#: error), the favoured phase (0 = alpha positive peak at C4), and the largest share of
#: that stretch pulses can remove.
_ONSET_STEP_S = 8.0
_ONSET_PHASE = 0.0
_ONSET_MAX_SHARE = 0.6
#: Cues in REM (modelling assumption, see :meth:`VirtualSleeper.stimulate`, 6): the chance
#: a cue that does not wake the sleeper enters the dream at full strength, the level
#: (dB SPL or the light's equivalent) where it is half that, the chance an incorporated
#: cue makes the dream lucid, and the delay of the lucid dreamer's eye signal (s).
_CUE_INCORP_P, _CUE_INCORP_HALF = 0.3, 40.0
_CUE_LUCID_P = 0.2
_LRLR_DELAY_S = (5.0, 15.0)


@dataclass(frozen=True)
class Person:
    """Per-person constants, drawn from the seed within physiological ranges.

    Attributes
    ----------
    eeg_scale : float
        Overall EEG amplitude factor (skull, scalp, electrode distance).
    alpha_hz : float
        Individual alpha frequency, 8.5-11.5 Hz (Klimesch 1999).
    spindle_hz : float
        Centre spindle frequency, 12-14.5 Hz.
    spindle_rate : float
        N2 spindles per minute at C4, 2.5-6.
    so_amp : float
        Half peak-to-peak slow-oscillation amplitude at C4 in N3 (uV), 40-65.
    hr_sleep : float
        Sleeping heart rate in N2 (bpm), 52-68.
    emg_scale : float
        Chin EMG amplitude factor.
    ecg_mv : float
        R-peak amplitude (mV).
    resp_hz : float
        Breathing rate (Hz), 0.2-0.3.
    """

    eeg_scale: float
    alpha_hz: float
    spindle_hz: float
    spindle_rate: float
    so_amp: float
    hr_sleep: float
    emg_scale: float
    ecg_mv: float
    resp_hz: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Person:
        """Draw a person from ``rng``."""
        return cls(
            eeg_scale=float(rng.uniform(0.88, 1.12)),
            alpha_hz=float(rng.uniform(8.8, 11.2)),
            spindle_hz=float(rng.uniform(12.2, 14.2)),
            spindle_rate=float(rng.uniform(2.5, 6.0)),
            so_amp=float(rng.uniform(40.0, 65.0)),
            hr_sleep=float(rng.uniform(52.0, 68.0)),
            emg_scale=float(rng.uniform(0.8, 1.25)),
            ecg_mv=float(rng.uniform(0.8, 1.6)),
            resp_hz=float(rng.uniform(0.2, 0.3)),
        )


# --------------------------------------------------------------------------------------
# Spectra
# --------------------------------------------------------------------------------------


def _shape_psd(freqs: np.ndarray, stage: str, person: Person) -> np.ndarray:
    """Un-normalised background PSD of C4-M1 for ``stage`` (aperiodic part + peaks)."""
    f = np.maximum(freqs, 0.05)
    chi = {"W": 1.4, "N1": 1.6, "N2": 2.0, "N3": 2.4, "R": 1.7}[stage]
    # Knee at 0.7 Hz keeps the aperiodic part finite at DC (Donoghue et al. 2020).
    psd = 1.0 / (0.7**chi + f**chi)

    def peak(f0: float, width: float, height: float) -> np.ndarray:
        return height * np.exp(-0.5 * ((f - f0) / width) ** 2)

    if stage == "W":
        psd += peak(person.alpha_hz, 1.0, 0.12)
        psd += peak(20.0, 5.0, 0.004)
    elif stage == "N1":
        psd += peak(5.5, 1.5, 0.03) + peak(person.alpha_hz - 1.0, 1.2, 0.01)
    elif stage == "N2":
        psd += peak(person.spindle_hz, 1.0, 0.004)
    elif stage == "R":
        psd += peak(5.0, 1.8, 0.03) + peak(person.alpha_hz - 1.5, 1.2, 0.008)
    # Amplifier and scalp-muscle floor above 30 Hz.
    psd += 2e-5
    # Mains-free roll-off of the electrode/amplifier chain above ~70 Hz.
    psd /= 1.0 + (f / 70.0) ** 4
    return psd


def _fit_psd(freqs: np.ndarray, stage: str, person: Person) -> np.ndarray:
    """PSD (uV^2/Hz) of the C4-M1 background, corrected to the stage's band powers.

    A smooth correction (piecewise linear in log power across band centres) is iterated
    until the relative band powers match :data:`_REL_POWER`, then the whole curve is scaled
    so the 0.4-30 Hz standard deviation equals :data:`_BG_STD` times the person's scale.
    """
    psd = _shape_psd(freqs, stage, person)
    target = np.asarray(_REL_POWER[stage], float)
    target = target / target.sum()
    df = freqs[1] - freqs[0]
    masks = [(freqs >= lo) & (freqs < hi) for lo, hi in _BANDS]
    centres = np.log([np.sqrt(lo * hi) for lo, hi in _BANDS])
    logf = np.log(np.maximum(freqs, 0.05))
    for _ in range(6):
        bp = np.array([psd[m].sum() for m in masks])
        corr = np.log(target / (bp / bp.sum()))
        psd = psd * np.exp(np.interp(logf, centres, corr))
    broad = (freqs >= 0.4) & (freqs <= 30.0)
    var = psd[broad].sum() * df
    std = _BG_STD[stage] * person.eeg_scale
    return psd * (std**2 / var)


def _frontal_gain(freqs: np.ndarray) -> np.ndarray:
    """Amplitude ratio Fpz-M2 / C4-M1: more delta and frontal muscle, much less alpha."""
    return np.interp(
        freqs,
        [0.0, 2.0, 5.0, 8.0, 10.0, 12.0, 16.0, 30.0, 60.0],
        [1.25, 1.15, 0.95, 0.6, 0.45, 0.65, 0.9, 1.2, 1.4],
    )


def _emg_psd(freqs: np.ndarray) -> np.ndarray:
    """Unit-variance chin EMG PSD: broadband 10-100 Hz (surface EMG), with some tail below."""
    f = np.maximum(freqs, 1e-3)
    psd = (f / 25.0) ** 2 / (1.0 + (f / 25.0) ** 2) / (1.0 + (f / 95.0) ** 4)
    return psd / (psd.sum() * (freqs[1] - freqs[0]))


# --------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------


def _ecg_table(sf: float) -> np.ndarray:
    """One heart beat (mV), time 0 = P-wave onset, sampled at ``sf`` over 1.2 s."""
    t = np.arange(int(1.2 * sf)) / sf

    def g(t0: float, sd: float, a: float) -> np.ndarray:
        return a * np.exp(-0.5 * ((t - t0) / sd) ** 2)

    return (
        g(0.06, 0.022, 0.12)
        + g(0.150, 0.007, -0.12)
        + g(0.165, 0.009, 1.0)
        + g(0.182, 0.008, -0.25)
        + g(0.42, 0.045, 0.28)
    )


#: Row gains of each event type (C4-M1 = 1 for cortical events; Fpz/E1 see frontal EEG).
#: Gains on the rows (C4-M1, Fpz-M2, E1-M2), as a column to broadcast over time.
_SPINDLE_ROWS = np.array([[1.0], [0.55], [0.3]])
_KC_ROWS = np.array([[1.0], [1.1], [0.6]])
_VERTEX_ROWS = np.array([[1.0], [0.45], [0.25]])
_BLINK_ROWS = np.array([[0.04], [1.0], [0.35]])
_EYE_ROWS = np.array([[0.03], [0.25], [1.0]])
_SO_ROWS = np.array([[1.0], [1.3], [0.75]])  # slow waves are frontal-predominant
_SIGNS = np.array([-1.0, 1.0])


def _event_templates(sf: float) -> dict[str, np.ndarray]:
    """Unit-amplitude event waveforms at ``sf`` (shapes after the AASM manual figures)."""

    def gauss(comps: list[tuple[float, float, float]]) -> np.ndarray:
        span = max(c + 4 * sd for c, sd, _ in comps)
        tt = np.arange(round(span * sf)) / sf
        return sum(a * np.exp(-0.5 * ((tt - c) / sd) ** 2) for c, sd, a in comps)

    def ramp(seconds: float, up: bool) -> np.ndarray:
        x = _smoothstep((np.arange(round(seconds * sf)) + 0.5) / (seconds * sf))
        return x if up else 1.0 - x

    return {
        # Blink: ~300 ms, fast rise, slower fall.
        "blink": gauss([(0.12, 0.05, 1.0), (0.25, 0.08, 0.5)]),
        # Vertex sharp wave: negative, < 0.5 s, with a small positive tail.
        "vertex": gauss([(0.15, 0.05, -1.0), (0.32, 0.08, 0.35)]),
        # K-complex: sharp negative wave then a slower positive one, >= 0.5 s in total.
        "kc": gauss([(0.25, 0.07, -1.0), (0.62, 0.14, 0.5)]),
        "sacc_rise": ramp(0.04, True),
        "sacc_fall": ramp(0.08, False),
        "rem_rise": ramp(0.05, True),
        "rem_fall": ramp(0.10, False),
    }


def _smoothstep_int(x: np.ndarray) -> np.ndarray:
    """Integral of :func:`_smoothstep` from 0 to ``x`` (0 below, ``x - 1/2`` above 1)."""
    c = np.clip(x, 0.0, 1.0)
    return c**3 - 0.5 * c**4 + np.maximum(x - 1.0, 0.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """0 -> 1 sigmoid on x in [0, 1] (clipped), C1-continuous."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------
# Why numba: a tile is a few dozen passes over 6 x 7500 samples, each a separate NumPy call
# with its own temporary; fused into one loop they cost a fraction. Each kernel repeats
# the NumPy arithmetic step by step (same dtypes, same order of operations; only
# correctly rounded + - * /, no transcendental functions), so the samples are unchanged
# bit for bit.


@numba.njit(cache=True)
def _combine_tile(
    out: np.ndarray,
    noise: np.ndarray,
    ev: np.ndarray,
    m: int,
    prev_noise: np.ndarray,
    prev_ev: np.ndarray,
    n_prev: int,
    next_noise: np.ndarray,
    n_next: int,
    ecg: np.ndarray,
    to_out: np.ndarray,
) -> None:  # pragma: no cover
    """Tile ``out`` (float64, ``(6, t)``) = own noise and events + the neighbours' cross-fade
    and spill + ECG, times the row unit.

    ``prev_*`` and ``next_noise`` are the neighbours' full buffers; ``n_prev`` (``n_next``)
    is 0 when there is no previous (next) tile. The additions run in the order of the NumPy
    original: own noise + own events, previous noise, previous events' spill, next noise,
    ECG (and 4 x ECG, in float32, on the chin).
    """
    rows, t = out.shape
    n_spill = prev_ev.shape[1] - t if n_prev else 0
    p0 = prev_noise.shape[1] - n_prev  # the previous tile's fade-out tail
    for r in range(rows):
        nr, er, o = noise[r], ev[r], out[r]
        for i in range(t):
            o[i] = np.float64(nr[m + i]) + np.float64(er[i])
        for i in range(n_prev):
            o[i] += prev_noise[r, p0 + i]
        for i in range(n_spill):
            o[i] += prev_ev[r, t + i]
        for i in range(n_next):
            o[t - n_next + i] += next_noise[r, i]
        if r == _ECG:
            for i in range(t):
                o[i] += ecg[i]
        elif r == _CHIN:
            four = np.float32(4.0)  # cardiac field on the chin electrodes (uV per mV)
            for i in range(t):
                o[i] += four * ecg[i]
        u = to_out[r]
        for i in range(t):
            o[i] *= u


@numba.njit(cache=True)
def _noise_spectrum(
    z: np.ndarray,
    ne: int,
    n2: int,
    nb: int,
    amp_c4: np.ndarray,
    amp_fz: np.ndarray,
    masks: np.ndarray,
    dg: np.ndarray,
    amp_emg: np.ndarray,
    emg_rms: np.float32,
    amp_acc: np.ndarray,
    spec: np.ndarray,
) -> None:  # pragma: no cover
    """Random spectra of C4, Fpz, chin EMG and accelerometer into ``spec`` (4, nb).

    ``z`` holds the uniform draws as complex64 (not yet centred): C4's ``ne`` bins, Fpz's
    own ``n2``, the EMG's ``nb``, then the accelerometer's. ``masks`` are the delta, alpha
    and beta band masks and ``dg`` their gains minus 1. Bins past each row's band stay 0.
    """
    half = np.complex64(0.5 + 0.5j)
    f075, f066 = np.complex64(0.75), np.complex64(0.66)
    na = amp_acc.shape[0]
    for i in range(ne):
        # Epoch-to-epoch band gain, in float64 then float32 (as NumPy's astype).
        g = 1.0 + dg[0] * masks[0, i]
        g = g + dg[1] * masks[1, i]
        g = np.float32(g + dg[2] * masks[2, i])
        z1 = z[i] - half
        spec[0, i] = np.complex64(amp_c4[i] * g) * z1
        zf = z1
        if i < n2:
            zf = zf * f075 + f066 * (z[ne + i] - half)
        spec[1, i] = np.complex64(amp_fz[i] * g) * zf
    for i in range(ne, nb):
        spec[0, i] = 0
        spec[1, i] = 0
    o3 = ne + n2
    for i in range(nb):
        spec[2, i] = np.complex64(amp_emg[i] * emg_rms) * (z[o3 + i] - half)
    o4 = o3 + nb
    for i in range(na):
        spec[3, i] = np.complex64(amp_acc[i]) * (z[o4 + i] - half)
    for i in range(na, nb):
        spec[3, i] = 0


@numba.njit(cache=True)
def _noise_rows(
    x: np.ndarray, ecg_gain: np.float32, win_up: np.ndarray, win_down: np.ndarray
) -> np.ndarray:  # pragma: no cover
    """The six channels' noise (6, n) from the four inverse FFTs ``x``, cross-fade applied.

    Fpz also feeds E1 (x 0.6) and the chin (x 0.03, EEG crosstalk, on top of the EMG); the
    ECG picks up the EMG (x ``ecg_gain``); the window is 1 between the edges.
    """
    n = x.shape[1]
    m2 = win_up.shape[0]
    out = np.empty((6, n), np.float32)
    f06, f003 = np.float32(0.6), np.float32(0.03)
    for i in range(n):
        x1, x2 = x[1, i], x[2, i]
        out[_C4, i] = x[0, i]
        out[_FPZ, i] = x1
        out[_E1, i] = x1 * f06
        out[_CHIN, i] = x1 * f003 + x2
        out[_ECG, i] = x2 * ecg_gain
        out[_ACC, i] = x[3, i]
    for r in range(6):
        for i in range(m2):
            out[r, i] *= win_up[i]
            out[r, n - m2 + i] *= win_down[i]
    return out


@numba.njit(cache=True)
def _add_wave(
    ev: np.ndarray,
    gains: np.ndarray,
    i0: int,
    a: float,
    w: np.ndarray,
    a2: float,
    w2: np.ndarray,
) -> None:  # pragma: no cover
    """``ev[:3, i0:] += gains * (a * w + a2 * w2)`` (float64 sums into the float32 rows),
    clipped to the buffer; ``w2`` may be empty (no second term).

    NumPy's order: the waveform first (``a * w``, plus ``a2 * w2``), then its gain per row.
    """
    j0 = 0
    if i0 < 0:
        j0, i0 = -i0, 0
    nn = min(w.shape[0] - j0, ev.shape[1] - i0)
    two = w2.shape[0] > 0
    for i in range(max(nn, 0)):
        x = a * w[j0 + i]
        if two:
            x = x + a2 * w2[j0 + i]
        for r in range(3):
            ev[r, i0 + i] = np.float64(ev[r, i0 + i]) + gains[r, 0] * x


@numba.njit(cache=True)
def _so_knots(
    periods: np.ndarray,
    brk: np.ndarray,
    gaps: np.ndarray,
    amps: np.ndarray,
    jitter: np.ndarray,
    tile_s: float,
    base: float,
) -> tuple:  # pragma: no cover
    """Knots of the slow-oscillation cycles that end within the tile (see
    :meth:`VirtualSleeper._so_trains`); ``keep = 0`` when none.

    Returns ``(keep, knot_t, knot_phase, knot_amp, peak_t, cycle_amp, train_spans)``.
    """
    n = periods.shape[0]
    starts = np.empty(n)
    ends = np.empty(n)
    acc = 0.0
    for i in range(n):  # np.cumsum(gaps + periods) - periods: a sequential sum
        acc += gaps[i] + periods[i]
        starts[i] = acc - periods[i]
        ends[i] = starts[i] + periods[i]
    keep = np.searchsorted(ends, tile_s, side="right")
    # A train shares one amplitude level; each cycle is jittered around it.
    cyc_amp = np.empty(keep)
    last = np.empty(keep, np.bool_)
    lvl = 0
    for i in range(keep):
        if brk[i]:
            lvl = i
        cyc_amp[i] = amps[lvl] * jitter[i]
        last[i] = brk[i + 1] if i + 1 < keep else True
    n_knots = 4 * keep + np.sum(last)
    kt = np.empty(n_knots)
    kph = np.empty(n_knots)
    ka = np.empty(n_knots)
    peaks = np.empty(keep)
    n_tr = np.sum(last)
    spans = np.empty((n_tr, 2))
    half_pi, two_pi = np.pi / 2, 2 * np.pi
    j = 0
    a_tr = 0
    b_tr = 0
    for i in range(keep):
        for c in range(5 if last[i] else 4):
            q = 0.25 * c  # exact: 0, 0.25, 0.5, 0.75, 1
            kt[j] = (starts[i] + periods[i] * q) + base
            kph[j] = half_pi + two_pi * (np.float64(i) + q)
            ka[j] = 0.0 if (c == 0 and brk[i]) or c == 4 else cyc_amp[i]
            j += 1
        peaks[i] = (starts[i] + 0.75 * periods[i]) + base
        if brk[i]:
            spans[a_tr, 0] = starts[i] + base
            a_tr += 1
        if last[i]:
            spans[b_tr, 1] = ends[i] + base
            b_tr += 1
    return keep, kt, kph, ka, peaks, cyc_amp, spans


@numba.njit(cache=True)
def _add_so(
    ev: np.ndarray,
    t_tile: np.ndarray,
    i0: int,
    i1: int,
    base: float,
    kt: np.ndarray,
    ka: np.ndarray,
    kph: np.ndarray,
    to_idx: float,
    lut: np.ndarray,
    gains: np.ndarray,
) -> None:  # pragma: no cover
    """Add the SO cycles over samples ``[i0, i1)`` of the tile to ``ev[:3]``.

    At ``tt = t_tile + base``: amplitude ``np.interp(tt, kt, ka, left=0.0, right=0.0)``,
    phase ``np.interp(tt, kt, kph)``, wave by table look-up of the phase (``int32``
    truncation, wrapped index), times the row gains, float64 sums into the float32 rows.
    The two interpolations are NumPy's, step for step (its slopes are ``dy * (1 / dx)``
    when there are no more knots than points, else ``dy / dx``), sharing one forward walk
    over the sorted knots.
    """
    n_k, n_lut = kt.shape[0], lut.shape[0]
    pre = n_k <= i1 - i0
    sa = np.empty(max(n_k - 1, 0))
    sp = np.empty(max(n_k - 1, 0))
    for j in range(n_k - 1):
        dx = kt[j + 1] - kt[j]
        if pre:
            inv = 1.0 / dx
            sa[j], sp[j] = (ka[j + 1] - ka[j]) * inv, (kph[j + 1] - kph[j]) * inv
        else:
            sa[j], sp[j] = (ka[j + 1] - ka[j]) / dx, (kph[j + 1] - kph[j]) / dx
    j = 0  # the last knot at or before tt (tt rises, so the walk only moves forward)
    for i in range(i0, i1):
        x = t_tile[i] + base
        if x > kt[n_k - 1]:
            a, ph = 0.0, kph[n_k - 1]
        elif x < kt[0]:
            a, ph = 0.0, kph[0]
        else:
            while j + 1 < n_k and kt[j + 1] <= x:
                j += 1
            if j == n_k - 1 or kt[j] == x:
                a, ph = ka[j], kph[j]
            else:
                a = sa[j] * (x - kt[j]) + ka[j]
                if np.isnan(a):  # NumPy's fallback (never with distinct knots)
                    a = sa[j] * (x - kt[j + 1]) + ka[j + 1]
                    if np.isnan(a) and ka[j] == ka[j + 1]:
                        a = ka[j]
                ph = sp[j] * (x - kt[j]) + kph[j]
                if np.isnan(ph):
                    ph = sp[j] * (x - kt[j + 1]) + kph[j + 1]
                    if np.isnan(ph) and kph[j] == kph[j + 1]:
                        ph = kph[j]
        w = a * lut[np.int32(ph * to_idx) % n_lut]  # take(mode="wrap")
        for r in range(3):
            ev[r, i] = np.float64(ev[r, i]) + gains[r, 0] * w


@numba.njit(cache=True)
def _ecg_kernel(
    basis: np.ndarray,
    rate: np.ndarray,
    sin1: np.ndarray,
    int1: np.ndarray,
    sin2: np.ndarray,
    int2: np.ndarray,
    nm_hr: np.ndarray,
    nm_beats: np.ndarray,
    frac: float,
    sfreq: float,
    table: np.ndarray,
    wander: np.ndarray,
    wander_gain: np.ndarray,
) -> np.ndarray:  # pragma: no cover
    """ECG (mV) of a tile by table look-up of the time since the last beat.

    Heart rate (beats/s) and beats since the tile start are built in float32 from the
    piecewise-linear ``basis`` (rows: 3 rate bases, 3 integrals) with the weights ``rate``
    (float32: edge, centre, edge), plus two sinusoids (``sin1`` and its integral ``int1``,
    ``sin2`` and ``int2``) with the weights ``rate[3:5]`` (skipped when 0). A
    nightmare's excess (``nm_hr``, ``nm_beats``; empty when none) turns both into float64,
    as NumPy's ``float32 + float64`` does; ``frac`` (the beat phase at the tile start) and
    ``sfreq`` then count in float64 too, else in float32. ``wander`` (sine, cosine rows)
    times ``wander_gain`` (float32) is the baseline wander.
    """
    t = basis.shape[1]
    hr = np.empty(t, np.float32)
    beats = np.empty(t, np.float32)
    for i in range(t):  # a loop of its own, so that it vectorises
        h = rate[0] * basis[0, i] + rate[1] * basis[1, i]
        h = h + rate[2] * basis[2, i]
        b = rate[0] * basis[3, i] + rate[1] * basis[4, i]
        b = b + rate[2] * basis[5, i]
        if rate[3] != 0:
            h = h + rate[3] * sin1[i]
            b = b + rate[3] * int1[i]
        if rate[4] != 0:
            h = h + rate[4] * sin2[i]
            b = b + rate[4] * int2[i]
        hr[i] = h
        beats[i] = b
    idx = np.empty(t, np.int32)
    if nm_hr.shape[0] > 0:
        for i in range(t):
            bd = (np.float64(beats[i]) + nm_beats[i]) + frac
            s = bd - np.floor(bd)
            s = s / (np.float64(hr[i]) + nm_hr[i])
            idx[i] = np.int32(s * sfreq)
    else:
        frac32, sf32 = np.float32(frac), np.float32(sfreq)
        for i in range(t):
            b = beats[i] + frac32
            s32 = b - np.floor(b)
            s32 = s32 / hr[i]
            idx[i] = np.int32(s32 * sf32)
    out = np.empty(t, np.float32)
    last = table.shape[0] - 1
    g0, g1 = wander_gain[0], wander_gain[1]
    for i in range(t):
        j = min(max(idx[i], 0), last)  # astype(int32), then take(mode="clip")
        e = table[j] + wander[0, i] * g0
        out[i] = e + wander[1, i] * g1
    return out


# --------------------------------------------------------------------------------------
# Overlays: things laid on the output in volts (arousals, artifacts, stimulus responses)
# --------------------------------------------------------------------------------------


@dataclass
class _Overlay:
    """Something drawn on top of the base night over ``[start, stop)`` samples.

    ``add`` holds additive rows (volts) of shape (6, stop - start) or None; ``gain`` a
    multiplicative envelope for the EEG/EOG rows (sleep EEG attenuated during an arousal)
    or None; ``nan_row`` a row to blank (lead-off). Arrays are built lazily by ``build``.
    """

    start: int
    stop: int
    build: Callable[[], tuple[np.ndarray | None, np.ndarray | None]]
    nan_row: int | None = None
    _cache: tuple[np.ndarray | None, np.ndarray | None] | None = None

    def apply(self, out: np.ndarray, start: int, stop: int, gain_pass: bool) -> None:
        """Draw on ``out`` (which holds samples ``[start, stop)``) where the spans meet.

        The gain pass (damping of the brain signal) runs before the additive pass, so
        artifacts and bursts laid on top are not damped by an overlapping arousal.
        """
        lo, hi = max(start, self.start), min(stop, self.stop)
        if lo >= hi:
            return
        if self._cache is None:
            self._cache = self.build()
        add, gain = self._cache
        a, b = lo - self.start, hi - self.start
        o = out[:, lo - start : hi - start]
        if gain_pass:
            if gain is not None:
                o[:3] *= gain[a:b]
            return
        if add is not None:
            o += add[:, a:b]
        if self.nan_row is not None:
            o[self.nan_row] = np.nan

    def release(self) -> None:
        """Drop the built arrays (they are rebuilt identically when needed again)."""
        self._cache = None


# --------------------------------------------------------------------------------------
# The sleeper
# --------------------------------------------------------------------------------------


class VirtualSleeper:
    """A seeded virtual sleeper: signal source and world hook.

    Parameters
    ----------
    seed : int
        Seed of the person and the night; the same seed gives the same samples.
    hours : float
        Length of the night when no hypnogram is given (rounded to 30-s epochs): at least
        one epoch (30 s = 0.00834 h), at most 24.
    sfreq : float
        Sampling rate in Hz (100-2000).
    hypnogram : sequence of str or None
        Stage per 30-s epoch (``W``, ``N1``, ``N2``, ``N3``, ``R``); its length sets the
        night. None draws one from the seed (see :func:`sim.hypnogram.generate_hypnogram`).
    artifacts : bool
        Add rare artifacts (electrode pops, motion, 50 Hz line noise, saturation,
        lead-off), each announced as a world event.
    nightmares : int or None
        None: nightmares as they come (late-night REM, about one night in four).
        N (0-100): exactly N nightmares, placed in the night's REM periods from the first
        one on (after 4 calm REM epochs, 4 epochs apart, 2-5 epochs long; fewer when the
        REM does not hold N, with a warning). Drawn from a stream of their own: the rest of
        the night is the one ``None`` gives, without its nightmares.

    Examples
    --------
    >>> with VirtualSleeper(seed=1, hours=0.5) as s:
    ...     x = s.read(0, 7500)
    >>> x.shape
    (6, 7500)
    """

    def __init__(
        self,
        seed: int,
        hours: float = 8.0,
        sfreq: float = DEFAULT_SFREQ,
        hypnogram: Sequence[str] | None = None,
        artifacts: bool = True,
        nightmares: int | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UserInputError(f"seed must be a non-negative integer, got {seed!r}")
        if nightmares is not None and (
            isinstance(nightmares, bool)
            or not isinstance(nightmares, (int, np.integer))
            or not 0 <= nightmares <= 100
        ):
            raise UserInputError(f"nightmares must be an integer in [0, 100], got {nightmares!r}")
        self.n_nightmares = None if nightmares is None else int(nightmares)
        if not 100.0 <= float(sfreq) <= 2000.0:
            raise UserInputError(f"sfreq must be between 100 and 2000 Hz, got {sfreq!r}")
        self.seed = int(seed)
        self.sfreq = float(sfreq)
        self.artifacts = bool(artifacts)
        self.person = Person.draw(self._rng(_S_PERSON))
        if hypnogram is None:
            n_ep = max(1, round(parse_hours(hours) * 3600.0 / EPOCH_S))
            self._hyp = generate_hypnogram(self._rng(_S_HYPNO), n_ep)
        else:
            self._hyp = [normalize_stage(s) for s in hypnogram]
            if not self._hyp:
                raise UserInputError("hypnogram must hold at least one epoch")
        self._stage_idx = np.array([STAGES.index(s) for s in self._hyp])
        self.tile_len = round(EPOCH_S * self.sfreq)
        self.n_epochs = len(self._hyp)
        n_samples = self.n_epochs * self.tile_len
        self.info = SourceInfo(
            sfreq=self.sfreq,
            channels=CHANNELS,
            n_samples=n_samples,
            description=f"sleeper://?seed={self.seed}&hours={n_samples / self.sfreq / 3600:g}"
            f"&sfreq={self.sfreq:g}&artifacts={int(self.artifacts)}"
            + ("" if nightmares is None else f"&nightmares={int(nightmares)}"),
        )
        self._closed = False
        self._setup_dsp()
        self._plan()
        self._heart_plan()
        self._raw_cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, tuple]] = OrderedDict()
        self._tile_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._stimuli: list[Stimulus] = []
        self._onsets: list[int] = []
        # Sleep onset as planned: epochs of wake/N1 before the first sleep epoch. Pulses
        # may bring it forward (stimulate, 5); the credit they built and what it removed.
        self._first_sleep0 = self._first_sleep()
        self._onset_credit = 0.0
        self._onset_removed = 0
        self._lucid_periods: set[int] = set()  # REM periods (first epoch) already lucid
        logger.debug("virtual sleeper %s: %d epochs", self.info.description, self.n_epochs)

    # ---------------------------------------------------------------- seeding helpers
    def _rng(self, stream: int, *key: int) -> np.random.Generator:
        """Generator for one stream (and key, e.g. tile index) of this night."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, stream, *key]))

    # ---------------------------------------------------------------- public API
    @property
    def hypnogram(self) -> list[str]:
        """Generating stage of each 30-s epoch (a copy)."""
        return list(self._hyp)

    def stage_at(self, sample: int) -> str:
        """Generating stage at ``sample`` (stimulus-evoked awakenings not included; a sleep
        onset brought forward by pulses is, see :meth:`stimulate`, 5)."""
        k = min(max(int(sample) // self.tile_len, 0), self.n_epochs - 1)
        return self._hyp[k]

    def so_phase(self, sample: int) -> float | None:
        """Phase (radians, 0 = positive peak, +-pi = trough) of the ongoing slow oscillation.

        Returns None when no slow-oscillation train runs at ``sample`` (amplitude below
        20 uV), e.g. in wake or REM. This is the sleeper's own ground truth, the phase a
        perfect closed-loop system would target.
        """
        amp, phase = self._so_state(int(sample))
        if amp < 20.0:
            return None
        return float(phase)

    def so_amplitude(self, sample: int) -> float:
        """Envelope (half peak-to-peak, uV at C4) of the slow-oscillation train at ``sample``."""
        return float(self._so_state(int(sample))[0])

    @property
    def stimuli(self) -> list[Stimulus]:
        """Stimuli heard so far, in the order received."""
        return list(self._stimuli)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return samples ``[start, stop)`` in volts, shape ``(6, stop - start)``.

        Reads past the end are clipped to :attr:`info.n_samples`. Any range may be read
        (tiles are rebuilt from the seed), but forward reads are fastest.
        """
        if self._closed:
            raise ValueError("read from a closed VirtualSleeper")
        start = max(int(start), 0)
        stop = min(int(stop), self.info.n_samples)
        if stop <= start:
            return np.zeros((6, 0))
        t = self.tile_len
        k0, k1 = start // t, (stop - 1) // t
        if k0 == k1:
            out = self._tile(k0)[:, start - k0 * t : stop - k0 * t].copy()
        else:
            out = np.empty((6, stop - start))
            for k in range(k0, k1 + 1):
                lo, hi = max(start, k * t), min(stop, (k + 1) * t)
                out[:, lo - start : hi - start] = self._tile(k)[:, lo - k * t : hi - k * t]
        self._apply_overlays(out, start, stop)
        return out

    def close(self) -> None:
        """Drop caches; further reads raise. Idempotent."""
        self._closed = True
        self._raw_cache.clear()
        self._tile_cache.clear()

    def __enter__(self) -> VirtualSleeper:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def world_events(self, start: int, stop: int) -> list[dict]:
        """Ground-truth events whose time lies in samples ``[start, stop)``, ordered by time.

        Kinds of ``event``: ``stage`` (``stage``, ``cause``), ``arousal`` (``duration``,
        ``cause``: spontaneous, stimulus or nightmare), ``artifact`` (``type``: pop, motion,
        line, saturation, leadoff; ``channel``, ``duration``), ``nightmare`` (``duration``:
        the planned one), ``nightmare_end`` (``duration`` as it ran, ``cause``: plan, haptic
        or awakening), ``evoked`` (response to a stimulus: ``phase``, ``gain``, ``stage``),
        ``onset_advance`` (pulses brought sleep onset forward: ``epochs``,
        ``first_sleep_s``, ``phase``, ``alpha_uv``; the changed stages come as ``stage``
        events with cause ``onset``), ``cue_incorporated`` (a cue in REM entered the dream:
        ``lucid``) and ``lucid_signal`` (the lucid dreamer's eye signal: ``signal``).
        """
        lo = bisect.bisect_left(self._ev_samples, int(start))
        hi = bisect.bisect_left(self._ev_samples, int(stop))
        return [dict(e) for e in self._events[lo:hi]]

    # ---------------------------------------------------------------- setup
    def _setup_dsp(self) -> None:
        """Precompute spectra (per stage), windows and templates for the tile length."""
        sf, t = self.sfreq, self.tile_len
        self._m = round(1.0 * sf)  # cross-fade half-width: 2 s of overlap between tiles
        self._spill = round(3.0 * sf)  # events may run this far into the next tile
        n = t + 2 * self._m
        self._n = n
        freqs = np.fft.rfftfreq(n, 1.0 / sf)
        # EEG content stops at ~70 Hz (the PSD is 1e-4 of its alpha peak there).
        self._nb_eeg = int(np.searchsorted(freqs, min(70.0, sf / 2)))
        self._nb_fpz = int(np.searchsorted(freqs, 40.0))
        self._nb_acc = int(np.searchsorted(freqs, 12.0))
        nb = len(freqs)
        # irfft of X = sqrt(S*sf*n/2)*Z has variance sum(S)*df for E|Z|^2 = 1; the draws
        # have variance 1/12 per part (E|Z|^2 = 1/6), hence the factor 6 / 2 = 3 here.
        scale = sf * n * 3.0
        fe = freqs[: self._nb_eeg]
        self._amp_c4: dict[str, np.ndarray] = {}
        self._amp_fz: dict[str, np.ndarray] = {}
        fg = _frontal_gain(fe)
        for s in STAGES:
            a = np.sqrt(_fit_psd(freqs, s, self.person) * scale)[: self._nb_eeg]
            self._amp_c4[s] = a.astype(np.float32)
            self._amp_fz[s] = (a * fg).astype(np.float32)
        self._amp_emg = np.sqrt(_emg_psd(freqs) * scale)[:nb].astype(np.float32)
        acc = np.zeros(self._nb_acc)
        acc[1:] = 1.0
        self._amp_acc = (acc * math.sqrt(scale / (self._nb_acc * sf / n)) * 0.0008).astype(
            np.float32
        )
        # Band masks for per-epoch variability (eyes open/closed, deeper/lighter epochs).
        self._m_delta = np.exp(-0.5 * (fe / 2.0) ** 2)
        self._m_alpha = np.exp(-0.5 * ((fe - self.person.alpha_hz) / 1.8) ** 2)
        self._m_beta = np.clip((fe - 14.0) / 6.0, 0.0, 1.0)
        self._band_masks = np.stack([self._m_delta, self._m_alpha, self._m_beta])
        # Power-complementary cross-fade (sin^2 + cos^2 = 1 for independent noise).
        ramp = np.sin(0.5 * np.pi * (np.arange(2 * self._m) + 0.5) / (2 * self._m))
        win = np.ones(n)
        win[: 2 * self._m] = ramp
        win[-2 * self._m :] = ramp[::-1]
        self._win_up = win[: 2 * self._m].astype(np.float32)
        self._win_down = win[-2 * self._m :].astype(np.float32)
        # The table ends in zeros (after the T wave), so clipping long R-R look-ups is right.
        self._ecg = (_ecg_table(sf) * self.person.ecg_mv).astype(np.float32)
        self._tpl = _event_templates(sf)
        # One slow-oscillation cycle by phase (0 = peak); down-states are deeper than
        # up-states are high (Massimini et al. 2004).
        c = np.cos(2 * np.pi * (np.arange(4096) + 0.5) / 4096)
        self._so_lut = c * np.where(c < 0, 1.15, 0.85)
        self._spindle_bank: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._t_tile = tt = np.arange(t) / sf
        # Bases of the piecewise-linear heart rate (edge, centre, edge) and their integrals.
        half = EPOCH_S / 2.0
        first = tt < half
        u = tt - half
        self._ecg_basis = np.array(
            [
                np.where(first, 1.0 - tt / half, 0.0),
                np.where(first, tt / half, 1.0 - u / half),
                np.where(first, 0.0, u / half),
                np.where(first, tt - 0.5 * tt**2 / half, 0.5 * half),
                np.where(first, 0.5 * tt**2 / half, 0.5 * half + u - 0.5 * u**2 / half),
                np.where(first, 0.0, 0.5 * u**2 / half),
            ]
        ).astype(np.float32)  # beats within a tile stay < 100: float32 is exact enough
        self._sin_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._sin_none = (np.zeros(t, np.float32), np.zeros(t, np.float32))  # amplitude 0
        wr = 2 * np.pi * self.person.resp_hz * tt
        self._wander = np.stack([0.05 * np.sin(wr), 0.05 * np.cos(wr)]).astype(np.float32)
        self._ev_len = t + self._spill
        self._no_wave = np.zeros(0)  # "no second waveform" for _add
        self._evoked_cache: tuple[list, list, np.ndarray, np.ndarray] | None = None

    # ---------------------------------------------------------------- planning O(epochs)
    def _plan(self) -> None:
        """Draw arousals, nightmares and artifacts; build the world-event list."""
        rng = self._rng(_S_PLAN)
        sf = self.sfreq
        events: list[dict] = []
        overlays: list[_Overlay] = []
        prev = None
        for k, s in enumerate(self._hyp):
            if s != prev:
                events.append({"t": k * EPOCH_S, "event": "stage", "stage": s, "cause": "plan"})
                prev = s
        # Spontaneous arousals: 3-15 s (AASM), drawn per epoch with stage-dependent rate.
        self._arousal_epochs = np.zeros(self.n_epochs, bool)
        p = np.array([_AROUSAL_P[s] for s in self._hyp])
        draws = rng.random(self.n_epochs)
        offs = rng.uniform(2.0, 22.0, self.n_epochs)
        durs = rng.uniform(3.0, 12.0, self.n_epochs)
        for k in np.flatnonzero(draws < p):
            t0 = k * EPOCH_S + offs[k]
            self._arousal_epochs[k] = True
            events.append(
                {
                    "t": t0,
                    "event": "arousal",
                    "duration": round(float(durs[k]), 2),
                    "cause": "spontaneous",
                }
            )
            overlays.append(self._arousal_overlay(round(t0 * sf), float(durs[k]), (1, int(k))))
        # Nightmares: rare, in late-night REM periods (about one night in four), or N of
        # them planted on request (their own stream, so the rest of the plan is unchanged).
        self._nightmare_epochs = np.zeros(self.n_epochs, bool)
        self._nightmares: list[dict] = []
        r_runs = _runs(self._hyp, "R")
        spans: list[tuple[int, int]] = []
        nm_rng = rng
        if self.n_nightmares is None:
            for a, b in r_runs:
                if a < self.n_epochs * 0.45 or b - a < 8 or rng.random() > 0.12:
                    continue
                k0 = int(rng.integers(a + 2, b - 4))
                n_ep = int(rng.integers(2, 6))
                spans.append((k0, min(k0 + n_ep, b)))
        else:
            nm_rng = self._rng(_S_NIGHTMARE)
            for a, b in r_runs:
                k0 = a + 4  # a calm REM stretch first: the detectors learn the REM baseline
                while len(spans) < self.n_nightmares and k0 + 2 <= b:
                    k1 = min(k0 + int(nm_rng.integers(2, 6)), b)
                    spans.append((k0, k1))
                    k0 = k1 + 4
            if len(spans) < self.n_nightmares:
                logger.warning(
                    "the night's REM holds %d of the %d nightmares asked for",
                    len(spans),
                    self.n_nightmares,
                )
        for k0, k1 in spans:
            self._nightmare_epochs[k0:k1] = True
            t_start, t_end = k0 * EPOCH_S, k1 * EPOCH_S
            nm: dict = {"start": t_start, "planned_end": t_end, "end": t_end, "key": k0}
            start_ev = {"t": t_start, "event": "nightmare", "duration": t_end - t_start}
            end_ev = {
                "t": t_end,
                "event": "nightmare_end",
                "duration": t_end - t_start,
                "cause": "plan",
            }
            events += [start_ev, end_ev]
            nm["end_event"] = end_ev
            nm["attempts"] = []
            for j in range(int(nm_rng.integers(1, 4))):
                t0 = t_start + nm_rng.uniform(0, t_end - t_start - 10.0)
                d = float(nm_rng.uniform(3.0, 10.0))
                ev = {"t": t0, "event": "arousal", "duration": round(d, 2), "cause": "nightmare"}
                ov = self._arousal_overlay(round(t0 * sf), d, (2, k0, j))
                events.append(ev)
                overlays.append(ov)
                nm["attempts"].append((ev, ov))
            nm["overlay"] = self._nightmare_overlay(nm)
            overlays.append(nm["overlay"])
            self._nightmares.append(nm)
        if self.artifacts:
            hours = self.n_epochs * EPOCH_S / 3600.0
            n_art = max(1, int(rng.poisson(1.0 * hours)))
            kinds = ("pop", "motion", "line", "saturation", "leadoff")
            for j in range(n_art):
                kind = kinds[int(rng.integers(len(kinds)))]
                t0 = float(rng.uniform(0.0, self.n_epochs * EPOCH_S - 5.0))
                ev, ov = self._artifact(kind, t0, rng, j)
                events.append(ev)
                overlays.append(ov)
        for e in events:
            # In place: a nightmare cut short finds (and removes) its later events by identity.
            full = {"kind": "world", **e, "t": round(float(e["t"]), 4)}
            e.clear()
            e.update(full)
        # Sorted once here; stimulus-driven entries are inserted in order (bisect) later.
        self._events = sorted(events, key=lambda e: e["t"])
        self._ev_t = [e["t"] for e in self._events]
        self._ev_samples = [self._sample_of(t) for t in self._ev_t]
        self._overlays = sorted(overlays, key=lambda o: o.start)
        self._ov_starts = [o.start for o in self._overlays]
        self._ov_maxlen = max((o.stop - o.start for o in self._overlays), default=0)

    def _sample_of(self, t: float) -> int:
        """First sample index at or after ``t`` seconds (events at t lie in that sample)."""
        return math.ceil(t * self.sfreq - 1e-6)

    def _add_event(self, event: dict) -> None:
        """Insert a world event, keeping time order (after events at the same time)."""
        event = {"kind": "world", **event, "t": round(float(event["t"]), 4)}
        i = bisect.bisect_right(self._ev_t, event["t"])
        self._events.insert(i, event)
        self._ev_t.insert(i, event["t"])
        self._ev_samples.insert(i, self._sample_of(event["t"]))

    def _add_overlay(self, ov: _Overlay) -> None:
        """Insert an overlay, keeping start order."""
        i = bisect.bisect_right(self._ov_starts, ov.start)
        self._overlays.insert(i, ov)
        self._ov_starts.insert(i, ov.start)
        self._ov_maxlen = max(self._ov_maxlen, ov.stop - ov.start)

    def _remove_event(self, event: dict) -> None:
        """Drop a planned world event (by identity) that has not happened yet."""
        i = bisect.bisect_left(self._ev_t, event["t"])
        while i < len(self._events) and self._ev_t[i] <= event["t"]:
            if self._events[i] is event:
                del self._events[i], self._ev_t[i], self._ev_samples[i]
                return
            i += 1

    def _remove_overlay(self, ov: _Overlay) -> None:
        """Drop a planned overlay (by identity) that has not begun yet."""
        i = bisect.bisect_left(self._ov_starts, ov.start)
        while i < len(self._overlays) and self._ov_starts[i] <= ov.start:
            if self._overlays[i] is ov:
                del self._overlays[i], self._ov_starts[i]
                return
            i += 1

    # ---------------------------------------------------------------- nightmares
    def _nightmare_at(self, t: float) -> dict | None:
        """The nightmare going on at ``t`` seconds (begun, not ended), or None."""
        for nm in self._nightmares:
            if nm["start"] <= t < nm["end"]:
                return nm
        return None

    def _nm_hr(self, t: np.ndarray, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Heart-rate excess (beats/s) of all nightmares at ``t`` (s), and its integral
        (beats) from ``t0`` to each ``t``; ``[t0, t1]`` is the span ``t`` covers.

        Each nightmare adds ``_NM_HR_BPM`` rising over ``_NM_RAMP_S`` from its start and
        the same ramp, shifted, falling from its end: a difference of two shifted
        smoothsteps, never negative, with a closed-form integral, so the beat count runs
        on across tiles and a nightmare cut short changes the heart only after its end.
        """
        hr = np.zeros_like(t)
        beats = np.zeros_like(t)
        r = _NM_RAMP_S
        for nm in self._nightmares:
            a, e = nm["start"], nm["end"]
            if t1 < a or t0 > e + r:
                continue
            amp = _NM_HR_BPM / 60.0
            hr += amp * (_smoothstep((t - a) / r) - _smoothstep((t - e) / r))
            beats += (
                amp
                * r
                * (
                    _smoothstep_int((t - a) / r)
                    - _smoothstep_int((t - e) / r)
                    - _smoothstep_int((t0 - a) / r)
                    + _smoothstep_int((t0 - e) / r)
                )
            )
        return hr, beats

    def _nm_beats_before(self, t: float) -> float:
        """Beats the nightmares added to the heart before ``t`` seconds."""
        r = _NM_RAMP_S
        amp = _NM_HR_BPM / 60.0
        x = np.array([t])
        return float(
            sum(
                amp
                * r
                * (_smoothstep_int((x - nm["start"]) / r) - _smoothstep_int((x - nm["end"]) / r))[0]
                for nm in self._nightmares
                if nm["start"] < t
            )
        )

    def _nightmare_overlay(self, nm: dict) -> _Overlay:
        """The nightmare's chin: more tone and twitches, from its start to its end.

        The noise and twitches are drawn over the planned span whatever the end, and the
        end only shapes the fade (2 s after it): a nightmare cut short keeps every sample
        before its new end.
        """
        sf = self.sfreq
        start = round(nm["start"] * sf)
        n = round((nm["planned_end"] - nm["start"] + 2.0) * sf)
        p = self.person

        def build() -> tuple[np.ndarray | None, np.ndarray | None]:
            rng = self._rng(_S_OVERLAY, 6, int(nm["key"]))
            tt = np.arange(n) / sf
            end = nm["end"] - nm["start"]
            env = _smoothstep(tt / 3.0) * (1.0 - _smoothstep((tt - end) / 2.0))
            extra = math.sqrt(_NM_EMG_FACTOR**2 - 1.0) * _EMG_RMS["R"] * p.emg_scale
            add = np.zeros((6, n))
            add[_CHIN] = _bandnoise(rng, n, sf, 10.0, min(110.0, sf / 2.2)) * extra * env
            planned = nm["planned_end"] - nm["start"]
            n_tw = int(rng.poisson(_NM_TWITCHES * planned / EPOCH_S))
            for t0, d, a, seed in zip(
                rng.uniform(0, planned, n_tw),
                rng.uniform(0.05, 0.25, n_tw),
                rng.uniform(8.0, 30.0, n_tw),
                rng.integers(0, 2**31, n_tw),
                strict=True,
            ):
                if t0 >= end:
                    continue
                i0 = round(t0 * sf)
                nn = min(round(d * sf), n - i0)
                w = np.random.default_rng(int(seed)).standard_normal(nn)
                add[_CHIN, i0 : i0 + nn] += a * p.emg_scale * w * np.sin(np.pi * np.arange(nn) / nn)
            add *= 1e-6
            return add, None

        return _Overlay(start, min(start + n, self.info.n_samples), build)

    def _end_nightmare(self, nm: dict, t_end: float, cause: str) -> dict:
        """Cut a nightmare short at ``t_end``: heart, chin and later attempts follow."""
        t_end = max(t_end, nm["start"])
        nm["end"] = t_end
        self._remove_event(nm["end_event"])
        for ev, ov in nm["attempts"]:
            if ev["t"] >= t_end:
                self._remove_event(ev)
                self._remove_overlay(ov)
        nm["overlay"].stop = min(round((t_end + 2.0) * self.sfreq), self.info.n_samples)
        nm["overlay"].release()
        # Tiles from the end on carry the old heart rate: rebuild them (the ECG before the
        # end is unchanged, so a re-read of earlier samples is identical).
        k_end = int(t_end // EPOCH_S)
        for cache in (self._tile_cache,):
            for k in [k for k in cache if k >= k_end]:
                del cache[k]
        return {
            "t": t_end,
            "event": "nightmare_end",
            "duration": round(t_end - nm["start"], 3),
            "cause": cause,
        }

    def _heart_plan(self) -> None:
        """Per-epoch heart rate and the heart phase (beats) at each epoch start."""
        rng = self._rng(_S_HEART)
        n = self.n_epochs
        hr = np.array(
            [self.person.hr_sleep + _HR_OFFSET[s] + rng.normal(0, _HR_SD[s]) for s in self._hyp]
        )
        # Nightmares add their own, sub-epoch heart-rate excess in _ecg_tile (_nm_hr).
        hr += 6.0 * self._arousal_epochs
        hr = np.clip(hr, 42.0, 130.0) / 60.0  # beats per second
        self._hr = hr
        # Within-epoch modulation: respiratory sinus arrhythmia (integer cycles per epoch so
        # each epoch's integral is exactly its linear part) plus a slower wave in REM.
        resp_cycles = np.full(n, round(self.person.resp_hz * EPOCH_S))
        resp_cycles += (self._stage_idx == STAGES.index("R")) * rng.integers(-1, 3, n)
        self._resp_cycles = resp_cycles
        rsa = {"W": 1.5, "N1": 2.0, "N2": 3.0, "N3": 3.5, "R": 1.5}
        self._rsa = np.array([rsa[s] for s in self._hyp]) / 60.0
        self._slow_cycles = rng.integers(1, 3, n)
        self._slow_amp = (
            np.where(self._stage_idx == STAGES.index("R"), rng.uniform(2.0, 6.0, n), 0.0) / 60.0
        )
        # HR is piecewise linear between epoch centres; integrate it per epoch.
        hp = np.concatenate([[hr[0]], hr, [hr[-1]]])
        edge = 0.5 * (hp[:-1] + hp[1:])  # HR at epoch edges, n + 1 values
        half = EPOCH_S / 2.0
        integ = half * 0.5 * (edge[:-1] + hr) + half * 0.5 * (hr + edge[1:])
        self._hr_edge = edge
        self._beat0 = np.concatenate([[0.0], np.cumsum(integ)])

    # ---------------------------------------------------------------- overlays
    def _arousal_overlay(self, start: int, dur: float, key: tuple[int, ...]) -> _Overlay:
        """Arousal: alpha/beta burst, sleep EEG damped, chin EMG burst, movement."""
        sf = self.sfreq
        n = max(round(dur * sf), 1)
        person = self.person

        def build() -> tuple[np.ndarray | None, np.ndarray | None]:
            rng = self._rng(_S_OVERLAY, *key)
            tt = np.arange(n) / sf
            ramp = min(0.5, dur / 4)
            env = _smoothstep(tt / ramp) * _smoothstep((dur - tt) / ramp)
            add = np.zeros((6, n))
            alpha = _narrowband(rng, n, sf, person.alpha_hz, 1.2) * 14.0
            beta = _narrowband(rng, n, sf, 21.0, 5.0) * 6.0
            eeg = (alpha + beta) * env * person.eeg_scale
            add[_C4] = eeg * 1e-6
            add[_FPZ] = (0.5 * alpha + 1.3 * beta) * env * 1e-6
            add[_E1] = 0.4 * add[_FPZ]
            emg = _bandnoise(rng, n, sf, 20.0, min(110.0, sf / 2.2))
            add[_CHIN] = emg * env * 22.0 * person.emg_scale * 1e-6
            add[_ACC] = _narrowband(rng, n, sf, 1.5, 1.0) * env * rng.uniform(0.02, 0.08)
            gain = 1.0 - 0.6 * env
            return add, gain

        return _Overlay(start, min(start + n, self.info.n_samples), build)

    def _artifact(
        self, kind: str, t0: float, rng: np.random.Generator, j: int
    ) -> tuple[dict, _Overlay]:
        """One artifact: its world event and its overlay (all in volts)."""
        sf = self.sfreq
        start = round(t0 * sf)
        names = [c.name for c in CHANNELS]
        nan_row = None
        if kind == "pop":
            row = int(rng.integers(0, 3))
            tau = float(rng.uniform(0.2, 1.0))
            dur = 5 * tau
            amp = float(rng.uniform(300.0, 3000.0)) * rng.choice([-1.0, 1.0]) * 1e-6

            def build() -> tuple[np.ndarray | None, np.ndarray | None]:
                add = np.zeros((6, round(dur * sf)))
                add[row] = amp * np.exp(-np.arange(add.shape[1]) / (tau * sf))
                return add, None

        elif kind == "motion":
            row = None
            dur = float(rng.uniform(2.0, 8.0))

            def build() -> tuple[np.ndarray | None, np.ndarray | None]:
                r = self._rng(_S_OVERLAY, 5, j)
                n = round(dur * sf)
                env = np.sin(np.pi * np.arange(n) / n)
                add = np.zeros((6, n))
                for ch, g in ((_C4, 150.0), (_FPZ, 300.0), (_E1, 250.0)):
                    add[ch] = _narrowband(r, n, sf, 1.5, 1.2) * g * env * 1e-6
                add[_CHIN] = _bandnoise(r, n, sf, 20.0, min(110.0, sf / 2.2)) * 30e-6 * env
                add[_ACC] = _narrowband(r, n, sf, 2.0, 1.5) * env * r.uniform(0.1, 0.4)
                return add, None

        elif kind == "line":
            row = None
            dur = float(rng.uniform(30.0, 240.0))
            amp = float(rng.uniform(20.0, 150.0)) * 1e-6
            phase = float(rng.uniform(0, 2 * np.pi))

            def build() -> tuple[np.ndarray | None, np.ndarray | None]:
                n = round(dur * sf)
                tt = (start + np.arange(n)) / sf
                hum = amp * (
                    np.sin(2 * np.pi * 50.0 * tt + phase)
                    + 0.15 * np.sin(2 * np.pi * 150.0 * tt + phase)
                )
                add = np.zeros((6, n))
                add[:4] = hum * np.array([1.0, 1.2, 1.5, 2.0])[:, None]
                return add, None

        elif kind == "saturation":
            row = int(rng.integers(0, 4))
            dur = float(rng.uniform(1.0, 8.0))
            level = float(rng.uniform(0.25, 0.5)) * rng.choice([-1.0, 1.0])

            def build() -> tuple[np.ndarray | None, np.ndarray | None]:
                n = round(dur * sf)
                add = np.zeros((6, n))
                # Fast rise (electrode shorted or amplifier railed), slow drift while railed.
                add[row] = (
                    level * _smoothstep(np.arange(n) / (0.05 * sf)) * np.linspace(1.0, 1.2, n)
                )
                return add, None

        else:  # leadoff
            row = int(rng.integers(0, 4))
            dur = float(rng.uniform(10.0, 90.0))
            nan_row = row

            def build() -> tuple[np.ndarray | None, np.ndarray | None]:
                return None, None

        stop = min(start + max(round(dur * sf), 1), self.info.n_samples)
        ev = {
            "t": t0,
            "event": "artifact",
            "type": kind,
            "channel": names[row] if row is not None else "all",
            "duration": round(dur, 3),
        }
        return ev, _Overlay(start, stop, build, nan_row=nan_row)

    def _apply_overlays(self, out: np.ndarray, start: int, stop: int) -> None:
        """Apply every overlay overlapping ``[start, stop)`` in start order."""
        lo = bisect.bisect_left(self._ov_starts, start - self._ov_maxlen)
        hi = bisect.bisect_left(self._ov_starts, stop)
        live = []
        for ov in self._overlays[lo:hi]:
            if ov.stop > start:
                live.append(ov)
            elif ov._cache is not None:
                ov.release()  # reads move forward: its memory can go
        for gain_pass in (True, False):
            for ov in live:
                ov.apply(out, start, stop, gain_pass)

    # ---------------------------------------------------------------- tiles
    def _tile(self, k: int) -> np.ndarray:
        """Final base samples of tile ``k`` in output units, shape (6, tile_len)."""
        cached = self._tile_cache.get(k)
        if cached is not None:
            return cached
        t, m = self.tile_len, self._m
        noise, ev, _ = self._raw(k)
        prev_noise, prev_ev, n_prev = noise, ev, 0
        if k > 0:
            prev_noise, prev_ev, _ = self._raw(k - 1)
            n_prev = m
        next_noise, n_next = noise, 0
        if k + 1 < self.n_epochs:
            next_noise, n_next = self._raw(k + 1)[0], m
        out = np.empty((6, t))
        _combine_tile(
            out, noise, ev, m, prev_noise, prev_ev, n_prev, next_noise, n_next,
            self._ecg_tile(k), _TO_OUT,
        )  # fmt: skip
        self._tile_cache[k] = out
        while len(self._tile_cache) > 3:
            self._tile_cache.popitem(last=False)
        return out

    def _raw(self, k: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Windowed noise (6, n), events (6, tile+spill) and SO trains of tile ``k``."""
        hit = self._raw_cache.get(k)
        if hit is not None:
            return hit
        rng = self._rng(_S_TILE, k)
        stage = self._hyp[k]
        noise = self._tile_noise(rng, stage, k)
        ev, trains = self._tile_events(rng, stage, k)
        res = (noise, ev, trains)
        self._raw_cache[k] = res
        while len(self._raw_cache) > 4:
            self._raw_cache.popitem(last=False)
        return res

    def _tile_noise(self, rng: np.random.Generator, stage: str, k: int) -> np.ndarray:
        """Background noise of every channel for tile ``k`` (cross-fade window applied)."""
        n, ne, na = self._n, self._nb_eeg, self._nb_acc
        nb = n // 2 + 1
        # Random spectra: real and imaginary parts uniform on [-0.5, 0.5) (variance 1/12, the
        # factor folded into the amplitude arrays). Each sample of the irfft sums thousands
        # of independent bins, so it is Gaussian by the central limit theorem, and uniform
        # draws cost a quarter of normal ones. float32 is ample for noise. Above 40 Hz
        # (amplifier floor, muscle) Fpz simply follows C4's random phases: it shares most of
        # its signal with C4 (coherence ~0.7-0.8 across sleep EEG bands).
        n2 = self._nb_fpz
        z = rng.random(2 * (ne + n2 + nb + na), dtype=np.float32).view(np.complex64)
        # Epoch-to-epoch variability: depth of delta, eyes open/closed alpha, beta. Drawn as
        # rng.lognormal(0.0, [0.15, 0.2, 0.15]) does (exp of the scaled normal draws, the
        # same libm exp), without its broadcasting overhead.
        zn = rng.standard_normal(3)
        gv = [math.exp(0.15 * zn[0]), math.exp(0.2 * zn[1]), math.exp(0.15 * zn[2])]
        if stage == "W" and rng.random() < 0.3:
            gv[1] *= 0.45  # eyes open: alpha blocks, more beta
            gv[2] *= 1.3
        dg = np.array(gv) - 1.0
        # A nightmare's extra chin tone is an overlay (_nightmare_overlay): it can end early.
        emg_rms = _EMG_RMS[stage] * self.person.emg_scale * float(rng.lognormal(0.0, 0.2))
        spec = np.empty((4, nb), np.complex64)  # every bin is written
        _noise_spectrum(
            z, ne, n2, nb, self._amp_c4[stage], self._amp_fz[stage], self._band_masks, dg,
            self._amp_emg, np.float32(emg_rms), self._amp_acc, spec,
        )  # fmt: skip
        x = _irfft(spec, n=n, axis=1)
        # ECG electrodes pick up a little chest-muscle noise (mV). The mastoid-referenced
        # EOG sees frontal EEG (hence big slow waves on it in N3).
        return _noise_rows(x, np.float32(0.02 / max(emg_rms, 1e-9)), self._win_up, self._win_down)

    def _ecg_tile(self, k: int) -> np.ndarray:
        """ECG (mV) of tile ``k`` from the continuous heart phase.

        Heart rate is piecewise linear between epoch centres plus sinusoids with a whole
        number of cycles per epoch, so the beat count integrates exactly and carries on
        across tiles; the waveform is looked up by time since the last beat.
        """
        # The weights go in as float32, as NumPy casts a Python float against float32 arrays.
        a1, a2 = float(self._rsa[k]), float(self._slow_amp[k])
        rate = np.array([self._hr_edge[k], self._hr[k], self._hr_edge[k + 1], a1, a2], np.float32)
        s1, i1 = self._sinus(int(self._resp_cycles[k])) if a1 else self._sin_none
        s2, i2 = self._sinus(int(self._slow_cycles[k])) if a2 else self._sin_none
        b0 = float(self._beat0[k])
        nm_hr = nm_beats = self._no_wave
        if self._nightmares:
            t0 = k * EPOCH_S
            hr, beats = self._nm_hr(self._t_tile + t0, t0, t0 + EPOCH_S)
            if hr.any():
                nm_hr, nm_beats = hr, beats
            b0 += self._nm_beats_before(t0)
        ph = 2 * np.pi * self.person.resp_hz * k * EPOCH_S
        return _ecg_kernel(
            self._ecg_basis, rate, s1, i1, s2, i2, nm_hr, nm_beats,
            b0 - math.floor(b0), self.sfreq, self._ecg, self._wander,
            np.array([math.cos(ph), math.sin(ph)], np.float32),
        )  # fmt: skip

    def _sinus(self, cycles: int) -> tuple[np.ndarray, np.ndarray]:
        """sin(w t) and its integral over the tile for ``cycles`` cycles per epoch (cached)."""
        hit = self._sin_cache.get(cycles)
        if hit is None:
            w = 2 * np.pi * cycles / EPOCH_S
            tt = self._t_tile
            hit = (
                np.sin(w * tt).astype(np.float32),
                ((1.0 - np.cos(w * tt)) / w).astype(np.float32),
            )
            self._sin_cache[cycles] = hit
        return hit

    # ---------------------------------------------------------------- events per tile
    def _tile_events(
        self, rng: np.random.Generator, stage: str, k: int
    ) -> tuple[np.ndarray, tuple]:
        """Transient events of tile ``k`` (uV; the ECG row unused) and its SO trains."""
        ev = np.zeros((6, self._ev_len), np.float32)  # uV: float32 is ample, half the traffic
        p = self.person
        dur_s = EPOCH_S
        trains: tuple = ()
        add, tpl = self._add, self._tpl
        if stage == "W":
            # Blinks: large on Fpz (the cornea moves up under the lid), smaller on E1.
            for t0 in rng.uniform(0, dur_s, rng.poisson(4)):
                add(ev, _BLINK_ROWS, t0, tpl["blink"], _uniform(rng, 80.0, 220.0))
            for t0 in rng.uniform(0, dur_s - 1, rng.poisson(2)):
                self._eye_moves(
                    ev, rng, t0, int(rng.integers(1, 4)), _uniform(rng, 40, 150), "sacc", (0.3, 2.0)
                )
            for t0 in rng.uniform(0, dur_s - 2, rng.poisson(1.0)):
                self._movement(ev, rng, t0, float(_uniform(rng, 0.5, 3.0)))
        elif stage == "N1":
            for t0 in rng.uniform(0, dur_s, rng.poisson(1.5)):
                add(ev, _VERTEX_ROWS, t0, tpl["vertex"], _uniform(rng, 40.0, 90.0) * p.eeg_scale)
            if rng.random() < 0.7:
                self._slow_eye(ev, rng, float(_uniform(rng, 0, dur_s - 8)))
        elif stage == "N2":
            for t0 in rng.uniform(0, dur_s, rng.poisson(p.spindle_rate / 2)):
                self._spindle(
                    ev,
                    rng,
                    t0,
                    _uniform(rng, 10.0, 22.0) * p.eeg_scale,
                    _uniform(rng, 0.5, 2.0),
                    _uniform(rng, -0.8, 0.8),
                )
            for t0 in rng.uniform(0, dur_s - 1, rng.poisson(0.6)):
                add(ev, _KC_ROWS, t0, tpl["kc"], _uniform(rng, 70.0, 150.0) * p.eeg_scale)
                if rng.random() < 0.5:
                    # K-complexes are often followed by a spindle (AASM).
                    self._spindle(
                        ev,
                        rng,
                        t0 + 0.6,
                        _uniform(rng, 10.0, 18.0) * p.eeg_scale,
                        _uniform(rng, 0.6, 1.2),
                        0.0,
                    )
            trains = self._so_trains(rng, k, density="sparse")
        elif stage == "N3":
            trains = self._so_trains(rng, k, density="dense")
            peaks = trains[3] if trains else np.zeros(0)
            for pk in peaks[rng.random(len(peaks)) < 0.25]:
                # Spindles nested in the up-state, starting shortly before its peak.
                self._spindle(
                    ev,
                    rng,
                    pk - k * EPOCH_S - 0.35,
                    _uniform(rng, 7.0, 14.0) * p.eeg_scale,
                    _uniform(rng, 0.6, 1.2),
                    -0.5,
                )
        elif stage == "R":
            phasic = rng.random() < 0.75
            for t0 in rng.uniform(0, dur_s - 2, rng.poisson(3.0 if phasic else 0.5)):
                self._eye_moves(
                    ev, rng, t0, int(rng.integers(1, 6)), _uniform(rng, 60, 220), "rem", (0.15, 0.7)
                )
            for t0 in rng.uniform(0, dur_s - 4, rng.poisson(1.0)):
                self._sawtooth(ev, rng, float(t0))
            # A nightmare's extra twitches are in its overlay.
            for t0 in rng.uniform(0, dur_s, rng.poisson(1.5)):
                self._twitch(ev, rng, float(t0))
        if trains:
            self._draw_trains(ev, trains, k)
        return ev, trains

    def _add(
        self,
        ev: np.ndarray,
        gains: np.ndarray,
        t0: float,
        w: np.ndarray,
        a: float = 1.0,
        w2: np.ndarray | None = None,
        a2: float = 0.0,
    ) -> None:
        """Add waveform ``a * w`` (``+ a2 * w2``) at ``t0`` s into rows C4, Fpz, E1 with a
        gain column each."""
        _add_wave(ev, gains, round(t0 * self.sfreq), a, w, a2, self._no_wave if w2 is None else w2)

    def _spindle(
        self,
        ev: np.ndarray,
        rng: np.random.Generator,
        t0: float,
        amp: float,
        dur: float,
        df: float,
    ) -> None:
        """Add a spindle: sin^2 (waxing-waning) envelope, slight down-chirp, random phase.

        Waveforms come from a bank quantised to 0.1 s and 0.2 Hz; the carrier phase is
        mixed from the bank's sine and cosine versions.
        """
        key = (round(dur * 10), round(df * 5))
        bank = self._spindle_bank.get(key)
        if bank is None:
            d, f = key[0] / 10, self.person.spindle_hz + key[1] / 5
            tt = np.arange(round(d * self.sfreq)) / self.sfreq
            env = np.sin(np.pi * tt / d) ** 2
            arg = 2 * np.pi * (f * tt - 0.3 * tt**2)
            bank = (env * np.sin(arg), env * np.cos(arg))
            self._spindle_bank[key] = bank
        ph = _uniform(rng, 0, 2 * np.pi)
        self._add(ev, _SPINDLE_ROWS, t0, bank[0], amp * math.cos(ph), bank[1], amp * math.sin(ph))

    def _eye_moves(
        self,
        ev: np.ndarray,
        rng: np.random.Generator,
        t0: float,
        n_mv: int,
        amp: float,
        kind: str,
        hold: tuple[float, float],
    ) -> None:
        """Conjugate eye movements: fast smoothed steps to a new position and back.

        Saccades in wake and REMs in REM: sharp rise (40-50 ms), a fixation of ``hold``
        seconds, return at half speed; on E1 mostly, a little on Fpz and C4.
        """
        sf = self.sfreq
        rise, fall = self._tpl[kind + "_rise"], self._tpl[kind + "_fall"]
        # rng.choice([-1.0, 1.0], n_mv) without its overhead: it draws integers(0, 2, n_mv).
        signs = _SIGNS[rng.integers(0, 2, n_mv)]
        amps = amp * rng.uniform(0.4, 1.0, n_mv) * signs
        holds = np.round(rng.uniform(*hold, n_mv) * sf).astype(int)
        pauses = np.round(rng.uniform(0.05, 0.6, n_mv) * sf).astype(int)
        nr, nf = len(rise), len(fall)
        # The whole burst as one waveform (movements separated by pauses at rest).
        w = np.zeros(int(np.sum(nr + holds + nf + pauses)))
        i = 0
        for a, nh, npause in zip(amps, holds, pauses, strict=True):
            w[i : i + nr] = a * rise
            w[i + nr : i + nr + nh] = a
            w[i + nr + nh : i + nr + nh + nf] = a * fall
            i += nr + nh + nf + npause
        self._add(ev, _EYE_ROWS, t0, w)

    def _so_trains(self, rng: np.random.Generator, k: int, density: str) -> tuple:
        """Slow-oscillation cycles of tile ``k`` as phase/amplitude knots (absolute s).

        Each cycle runs from a descending zero crossing (phase pi/2) through the trough
        (pi, the down-state) and the ascending crossing to the peak (2 pi, the up-state),
        then on to the next cycle; cycles come in trains separated by gaps (dense in N3,
        sparse single waves in N2). The envelope is 0 at each train's first and last
        crossing. Trains end inside the tile, so the phase in a tile is the tile's own.

        Returns
        -------
        tuple
            ``(knot_t, knot_phase, knot_amp, peak_t, peak_amp, train_spans)``, or ``()``
            when none.
        """
        p = self.person
        n_max = 40
        periods = 1.0 / rng.uniform(0.6, 1.25, n_max)
        if density == "dense":
            brk = rng.random(n_max) < 0.15
            gaps = np.where(brk, rng.exponential(0.8, n_max), 0.0)
            amps = p.so_amp * p.eeg_scale * rng.uniform(0.75, 1.25, n_max)
            first = float(_uniform(rng, 0.0, 0.6))
        else:
            brk = rng.random(n_max) < 0.6
            gaps = np.where(brk, rng.exponential(20.0, n_max), 0.0)
            amps = p.so_amp * p.eeg_scale * rng.uniform(0.4, 0.7, n_max)
            first = float(_uniform(rng, 0.0, 15.0))
        jitter = rng.uniform(0.85, 1.15, n_max)
        brk[0] = True
        gaps[0] = first
        keep, kt, kph, ka, peaks, amps, spans = _so_knots(
            periods, brk, gaps, amps, jitter, EPOCH_S, k * EPOCH_S
        )
        if keep == 0:
            return ()
        return (kt, kph, ka, peaks, amps, spans)

    def _draw_trains(self, ev: np.ndarray, trains: tuple, k: int) -> None:
        """Render SO cycles into the event buffer (C4, Fpz with frontal predominance, E1)."""
        kt, kph, ka, spans = trains[0], trains[1], trains[2], trains[5]
        base, sf = k * EPOCH_S, self.sfreq
        lut = self._so_lut
        to_idx = len(lut) / (2 * np.pi)
        # One pass over the covered range when trains are dense (N3), else one per train
        # (sparse N2 trains cover a few seconds of the tile).
        ranges = [(spans[0, 0], spans[-1, 1])] if len(spans) > 2 else spans
        for ts, te in ranges:
            i0 = max(int((ts - base) * sf), 0)
            i1 = min(int((te - base) * sf) + 2, self.tile_len)
            # Wave shape by table look-up of the phase (much cheaper than cos per sample).
            _add_so(ev, self._t_tile, i0, i1, base, kt, ka, kph, to_idx, lut, _SO_ROWS)

    def _so_state(self, sample: int) -> tuple[float, float]:
        """(amplitude, phase) of the SO at ``sample``, phase 0 = peak, +-pi = trough."""
        k = sample // self.tile_len
        if not 0 <= k < self.n_epochs:
            return 0.0, 0.0
        trains = self._raw(k)[2]
        if not trains:
            return 0.0, 0.0
        tsec = sample / self.sfreq
        kt, kph, ka = trains[0], trains[1], trains[2]
        a = float(np.interp(tsec, kt, ka, left=0.0, right=0.0))
        ph = float(np.interp(tsec, kt, kph))
        return a, (ph + np.pi) % (2 * np.pi) - np.pi

    def _slow_eye(self, ev: np.ndarray, rng: np.random.Generator, t0: float) -> None:
        """Slow rolling eye movements of drowsiness (0.3-0.6 Hz, several seconds)."""
        sf = self.sfreq
        d = float(_uniform(rng, 4.0, 8.0))
        i0 = round(t0 * sf)
        nn = min(round(d * sf), self._ev_len - i0)
        tt = np.arange(nn) / sf
        w = (
            _uniform(rng, 50, 120)
            * np.sin(np.pi * tt / d)
            * np.sin(2 * np.pi * _uniform(rng, 0.3, 0.6) * tt + _uniform(rng, 0, 6.3))
        )
        ev[_E1, i0 : i0 + nn] += w
        ev[_FPZ, i0 : i0 + nn] += 0.2 * w

    def _sawtooth(self, ev: np.ndarray, rng: np.random.Generator, t0: float) -> None:
        """A burst of REM sawtooth waves: 2-5 Hz triangles, slow rise then sharp fall."""
        sf = self.sfreq
        d = float(_uniform(rng, 1.0, 3.5))
        f = float(_uniform(rng, 2.0, 5.0))
        i0 = round(t0 * sf)
        nn = min(round(d * sf), self._ev_len - i0)
        tt = np.arange(nn) / sf
        ph = (f * tt) % 1.0
        tri = np.where(ph < 0.75, ph / 0.75, (1.0 - ph) / 0.25) * 2.0 - 1.0
        w = _uniform(rng, 15.0, 35.0) * self.person.eeg_scale * np.sin(np.pi * tt / d) * tri
        ev[_C4, i0 : i0 + nn] += w
        ev[_FPZ, i0 : i0 + nn] += 0.6 * w
        ev[_E1, i0 : i0 + nn] += 0.35 * w

    def _twitch(self, ev: np.ndarray, rng: np.random.Generator, t0: float) -> None:
        """Phasic chin EMG twitch (50-250 ms burst) on the atonic background."""
        sf = self.sfreq
        d = float(_uniform(rng, 0.05, 0.25))
        i0 = round(t0 * sf)
        nn = min(round(d * sf), self._ev_len - i0)
        w = rng.standard_normal(nn) * np.sin(np.pi * np.arange(nn) / max(nn, 1))
        ev[_CHIN, i0 : i0 + nn] += _uniform(rng, 8.0, 30.0) * self.person.emg_scale * w

    def _movement(self, ev: np.ndarray, rng: np.random.Generator, t0: float, d: float) -> None:
        """Body movement in wake: accelerometer swing, EMG burst, small EEG sway."""
        sf = self.sfreq
        i0 = round(t0 * sf)
        nn = min(round(d * sf), self._ev_len - i0)
        if nn < 8:
            return
        env = np.sin(np.pi * np.arange(nn) / nn)
        ev[_ACC, i0 : i0 + nn] += (
            _narrowband(rng, nn, sf, 2.0, 1.5) * env * _uniform(rng, 0.02, 0.15)
        )
        ev[_CHIN, i0 : i0 + nn] += rng.standard_normal(nn) * env * 20.0 * self.person.emg_scale

    # ---------------------------------------------------------------- stimuli
    def stimulate(self, stimulus: Stimulus) -> None:
        """Hear a stimulus emitted at ``stimulus.onset_sample`` and respond.

        Response model (audio; light and haptic only count toward arousal, except a haptic
        pulse during a nightmare, 3):

        1. Evoked slow oscillation (Ngo et al. 2013, Neuron 78:545): a K-complex-like
           wave, trough 0.5 s after onset, peak 1.0 s, then a spindle phase-locked to that
           peak (12-15 Hz, ~1 s) and a short train of slow waves (raised slow-wave activity
           for ~3-5 s). Size = stage gain (N3 1, N2 0.7, N1 0.15, R 0.1, W 0) x loudness
           gain (logistic, half at 40 dB SPL) x phase gain ``0.2 + 0.8 * ((1 + cos(phase)) /
           2) ** 2`` with phase the sleeper's own SO phase at onset (0 = up-state peak): a
           sound in the up-phase evokes up to 5x more than one in the down-phase.
        2. Arousal: probability ``1 - exp(-s * (0.25 * exp((L - 55) / 5) + 0.15 * max(0,
           n - 2)))`` with ``s`` the stage sensitivity (N1 1, N2 0.6, R 0.4, N3 0.15), ``L``
           the level in dB SPL and ``n`` the stimuli in the previous 10 s: at 50 dB about
           5 % per sound in N2 and 1.4 % in N3, at 65 dB 67 % and 24 %; more than two sounds
           in 10 s add to it (Bonnet 1986; CLAS studies run at 45-55 dB). An arousal (3-12 s of
           alpha/beta, damped sleep EEG, chin EMG burst, movement) is a world event; one in
           four ends in a short awakening (20-60 s of wake signals, stage events W and
           back).
        3. Haptic pulse during a nightmare (instead of 2). This is the effect NightWare
           (an Apple Watch app, FDA De Novo authorisation November 2020) is built on: a
           vibration when heart rate and movement signal a nightmare, meant to interrupt it
           without waking the sleeper. The dose-response below is a modelling
           assumption, not fitted to published data: with ``d`` the drive in percent,
           the pulse wakes the sleeper with probability ``1 / (1 + exp(-(d - 70) / 7))``
           (0.3 % at 30 %, 5 % at 50 %, 19 % at 60 %): a short awakening as above, and
           the nightmare ends (``nightmare_end``, cause ``awakening``). Otherwise it ends
           the nightmare with probability ``1 / (1 + exp(-(d - 35) / 7))`` (10 % at 20 %,
           67 % at 40 %, 97 % at 60 %) 1-3 s after the pulse (cause ``haptic``): the heart
           rate falls back to the REM level over 12 s, the extra chin tone fades over
           2 s, and the arousal attempts it had not made yet do not come. A pulse that
           does neither leaves the nightmare to run its planned course (``nightmare_end``,
           cause ``plan``). Haptic pulses outside a nightmare count toward arousal as in 2.
        4. The safety island's release cue (``reason == "release"``, a dim light ramp meant
           to wake a trapped sleeper) wakes a sleeper in a nightmare with probability
           ``min(1, level / 10)`` per pulse (modelling assumption), as in 3.
        5. Sound while falling asleep (stage W or N1, before the night's first sleep
           epoch), when it does not arouse. Motivation: Elemind reports a 10.5-min shorter
           sleep latency with sound pulses locked to the alpha phase at sleep onset; the
           model below is a modelling assumption, not fitted to their data. The sleeper's
           own alpha phase ``phi`` at the onset (zero-phase 8-12 Hz, Hilbert; 0 = positive
           peak at C4) adds ``8 s * cos(phi)`` to a credit; each whole 30 s of credit
           removes one epoch of the wake/N1 stretch still to come (the latest wake epochs
           first, then N1, one N1 epoch always kept) and the first N2 comes that much
           earlier (the removed epochs become N2 before the planned sleep). At most 60 %
           of the planned stretch can go. Pulses at random phases average to no credit (and
           pulses in the wrong half of the cycle take credit away), so only phase-locked
           pulses shorten the latency. The change starts at the first epoch whose samples
           (including its 1-s cross-fade into the previous one) lie wholly after the
           onset: nothing before the pulse changes. An ``onset_advance`` world event
           (``epochs``, ``first_sleep_s``, ``phase``, ``alpha_uv``) and ``stage`` events
           with cause ``onset`` record it; the heart rate keeps the planned stages.
        6. Cue in REM (audio, or light: a light of ``p`` percent counts as
           ``40 + p / 2`` dB SPL in 2, so 10 % arouses like 45 dB: about 1.3 % per cue in
           REM, 30 % about 10 %). A cue that does not arouse enters the dream with
           probability ``0.3 / (1 + exp(-(L - 40) / 4))`` (``L`` the level or its light
           equivalent; world event ``cue_incorporated``), and an incorporated cue makes
           the dream lucid with probability 0.2, once per REM period (``lucid: true``);
           the lucid dreamer then signals with four left-right eye movements 5-15 s
           later (LRLR, the signal of LaBerge et al. 1981, Percept Mot Skills 52:727; a
           ``lucid_signal`` world event and a 250-µV EOG overlay). Cue incorporation and
           lucidity rates in studies vary widely (Dreamento; Carr et al. 2020): these
           numbers are modelling assumptions.

        Effects are overlays on samples at or after the onset; the draw is seeded by
        (seed, onset sample, number of stimuli so far), so the same stimuli give the same
        night.
        """
        self._stimuli.append(stimulus)
        onset = int(stimulus.onset_sample)
        if not 0 <= onset < self.info.n_samples:
            return
        sf = self.sfreq
        stage = self.stage_at(onset)
        rng = self._rng(_S_STIM, onset, len(self._stimuli))
        t_on = onset / sf
        new_ev: list[dict] = []
        new_ov: list[_Overlay] = []
        if stimulus.modality == "audio":
            phase = self.so_phase(onset)
            ph_gain = 0.2 + 0.8 * ((1 + math.cos(phase)) / 2) ** 2 if phase is not None else 0.35
            loud = 1.0 / (1.0 + math.exp(-(stimulus.level - 40.0) / 4.0))
            gain = _EVOKED_GAIN[stage] * loud * ph_gain
            if gain > 0.02:
                new_ov.append(self._evoked_overlay(onset, gain, rng))
                new_ev.append(
                    {
                        "t": t_on,
                        "event": "evoked",
                        "stage": stage,
                        "gain": round(gain, 4),
                        "phase": None if phase is None else round(math.degrees(phase), 1),
                    }
                )
        # Stimuli heard in the 10 s before this one (onsets kept sorted for the count).
        recent = bisect.bisect_left(self._onsets, onset) - bisect.bisect_left(
            self._onsets, onset - round(10.0 * sf)
        )
        bisect.insort(self._onsets, onset)
        nightmare = self._nightmare_at(t_on)
        if nightmare is not None and stimulus.reason == "release":
            # The safety island's wake cue: meant to wake a trapped sleeper, and it does.
            if rng.random() < min(1.0, stimulus.level / 10.0):
                self._wake_from_nightmare(nightmare, onset, rng, new_ev, new_ov)
            nightmare = None
        if nightmare is not None and stimulus.modality == "haptic":
            self._haptic_in_nightmare(nightmare, stimulus, onset, rng, new_ev, new_ov)
            for e in new_ev:
                self._add_event(e)
            for ov in new_ov:
                self._add_overlay(ov)
            return
        level = stimulus.level if stimulus.modality == "audio" else 50.0
        if stimulus.modality == "light" and stimulus.reason != "release":
            # A dim light is gentler than a 50-dB sound (modelling assumption, 6).
            level = 40.0 + 0.5 * stimulus.level
        lam = _AROUSAL_SENS[stage] * (
            0.25 * math.exp((level - 55.0) / 5.0) + 0.15 * max(0, recent - 2)
        )
        aroused = rng.random() < 1.0 - math.exp(-lam)
        if (
            not aroused
            and stage == "R"
            and stimulus.modality in ("audio", "light")
            and stimulus.reason != "release"
        ):
            self._cue_in_rem(onset, level, rng, new_ev, new_ov)
        if (
            not aroused
            and stimulus.modality == "audio"
            and stage in ("W", "N1")
            and onset // self.tile_len < self._first_sleep()
        ):
            self._onset_pulse(onset, new_ev)
        if aroused:
            wake = rng.random() < 0.25
            dur = float(rng.uniform(20.0, 60.0) if wake else rng.uniform(3.0, 12.0))
            t0 = t_on + float(rng.uniform(0.3, 1.0))
            self._stimulus_arousal(onset, t0, dur, wake, new_ev, new_ov)
        for e in new_ev:
            self._add_event(e)
        for ov in new_ov:
            self._add_overlay(ov)

    # ---------------------------------------------------------------- onset and REM cues
    def _first_sleep(self) -> int:
        """Index of the first epoch that is neither W nor N1 (the night's sleep onset)."""
        for k, s in enumerate(self._hyp):
            if s not in ("W", "N1"):
                return k
        return self.n_epochs

    def alpha_phase(self, onset: int) -> tuple[float, float]:
        """The sleeper's own alpha phase and envelope at C4 at sample ``onset``.

        Ground truth as the phase benches take it: zero-phase 8-12 Hz Butterworth (order 2,
        ``sosfiltfilt``) and the Hilbert transform over +-1 s around ``onset``, on the
        samples as they are now (stimuli heard so far included).

        Parameters
        ----------
        onset : int
            Sample index.

        Returns
        -------
        phase : float
            Radians, 0 = positive peak of the alpha wave.
        envelope : float
            Analytic amplitude (uV); 0 with the phase 0 when there is too little signal.
        """
        from scipy import signal

        half = round(1.0 * self.sfreq)
        lo, hi = max(0, onset - half), min(self.info.n_samples, onset + half)
        x = self.read(lo, hi)[_C4] * 1e6
        if x.size < 0.5 * self.sfreq or not np.all(np.isfinite(x)):
            return 0.0, 0.0
        sos = signal.butter(2, (8.0, 12.0), "bandpass", fs=self.sfreq, output="sos")
        z = signal.hilbert(signal.sosfiltfilt(sos, x))[onset - lo]
        return float(np.angle(z)), float(np.abs(z))

    def _onset_pulse(self, onset: int, new_ev: list[dict]) -> None:
        """A sound while falling asleep: phase-locked pulses bring sleep onset forward."""
        phase, env = self.alpha_phase(onset)
        self._onset_credit += _ONSET_STEP_S * math.cos(phase - _ONSET_PHASE)
        cap = int(_ONSET_MAX_SHARE * self._first_sleep0)
        want = min(cap, int(max(0.0, self._onset_credit) // EPOCH_S))
        if want <= self._onset_removed:
            return
        t = self.tile_len
        c = onset // t
        # The first epoch that may change: its noise cross-fades into the last second of
        # the epoch before, which must lie after the onset (samples before it never change).
        first = c + 1 if onset < (c + 1) * t - self._m else c + 2
        n2 = self._first_sleep()
        span = list(range(first, n2))
        drop = want - self._onset_removed
        # Wake goes first (the latest wake epochs), then N1, one N1 epoch always kept.
        wake = [k for k in span if self._hyp[k] == "W"][::-1]
        n1 = [k for k in span if self._hyp[k] == "N1"]
        gone = set(wake[:drop])
        if len(gone) < drop and len(n1) > 1:
            gone |= set(n1[::-1][: min(drop - len(gone), len(n1) - 1)])
        if not gone:
            return
        kept = [self._hyp[k] for k in span if k not in gone]
        new = self._hyp[:first] + kept + ["N2"] * len(gone) + self._hyp[n2:]
        self._set_stages(new, first, n2)
        self._onset_removed += len(gone)
        new_ev.append(
            {
                "t": onset / self.sfreq,
                "event": "onset_advance",
                "epochs": len(gone),
                "first_sleep_s": self._first_sleep() * EPOCH_S,
                "phase": round(math.degrees(phase), 1),
                "alpha_uv": round(env, 1),
            }
        )

    def _set_stages(self, new: list[str], first: int, stop: int) -> None:
        """Replace the hypnogram from epoch ``first`` on; rebuild what depends on it."""
        self._hyp = new
        self._stage_idx = np.array([STAGES.index(s) for s in new])
        for k in [k for k in self._raw_cache if k >= first]:
            del self._raw_cache[k]
        for k in [k for k in self._tile_cache if k >= first - 1]:
            del self._tile_cache[k]
        # Stage world events of the changed stretch: the planned ones go, the new ones come.
        t0, t1 = first * EPOCH_S, stop * EPOCH_S
        for e in [
            e
            for e in self._events
            if e["event"] == "stage" and e["cause"] in ("plan", "onset") and t0 <= e["t"] <= t1
        ]:
            self._remove_event(e)
        for k in range(first, min(stop + 1, self.n_epochs)):
            if new[k] != new[k - 1]:
                self._add_event(
                    {"t": k * EPOCH_S, "event": "stage", "stage": new[k], "cause": "onset"}
                )

    def _cue_in_rem(
        self,
        onset: int,
        level: float,
        rng: np.random.Generator,
        new_ev: list[dict],
        new_ov: list[_Overlay],
    ) -> None:
        """A cue heard or seen in REM that did not wake: it may enter the dream, even make
        it lucid (the dreamer then signals with left-right eye movements)."""
        sf = self.sfreq
        k = onset // self.tile_len
        period = k
        while period > 0 and self._hyp[period - 1] == "R":
            period -= 1
        p_inc = _CUE_INCORP_P / (1.0 + math.exp(-(level - _CUE_INCORP_HALF) / 4.0))
        u_inc, u_lucid = rng.random(), rng.random()
        if u_inc >= p_inc:
            return
        lucid = period not in self._lucid_periods and u_lucid < _CUE_LUCID_P
        ev = {"t": onset / sf, "event": "cue_incorporated", "lucid": lucid}
        new_ev.append(ev)
        if lucid:
            self._lucid_periods.add(period)
            t_sig = onset / sf + float(rng.uniform(*_LRLR_DELAY_S))
            if t_sig < self.info.duration - 3.0:
                new_ev.append({"t": t_sig, "event": "lucid_signal", "signal": "LRLR"})
                new_ov.append(self._lrlr_overlay(round(t_sig * sf), rng))

    def _lrlr_overlay(self, start: int, rng: np.random.Generator) -> _Overlay:
        """The lucid dreamer's agreed signal: full left-right-left-right eye movements
        (LaBerge et al. 1981), four large swings of the EOG in about 2 s."""
        sf = self.sfreq
        n = round(2.4 * sf)
        amp = float(rng.uniform(200.0, 300.0))

        def build() -> tuple[np.ndarray | None, np.ndarray | None]:
            tt = np.arange(n) / sf
            sq = np.sign(np.sin(2 * np.pi * tt / 1.2)) * np.sin(np.pi * tt / (n / sf)) ** 0.2
            w = amp * np.convolve(sq, np.ones(round(0.04 * sf)) / round(0.04 * sf), "same")
            add = np.zeros((6, n))
            add[_E1] = w * 1e-6
            add[_FPZ] = 0.25 * w * 1e-6
            add[_C4] = 0.03 * w * 1e-6
            return add, None

        return _Overlay(start, min(start + n, self.info.n_samples), build)

    def _haptic_in_nightmare(
        self,
        nm: dict,
        stimulus: Stimulus,
        onset: int,
        rng: np.random.Generator,
        new_ev: list[dict],
        new_ov: list[_Overlay],
    ) -> None:
        """A haptic pulse felt during a nightmare: it may wake, end the nightmare, or neither."""
        sf = self.sfreq
        t_on = onset / sf
        drive = float(stimulus.level)
        p_wake = 1.0 / (1.0 + math.exp(-(drive - _HAPTIC_WAKE_HALF) / _HAPTIC_WAKE_SLOPE))
        p_end = 1.0 / (1.0 + math.exp(-(drive - _HAPTIC_END_HALF) / _HAPTIC_END_SLOPE))
        u_wake, u_end = rng.random(), rng.random()
        if u_wake < p_wake:
            self._wake_from_nightmare(nm, onset, rng, new_ev, new_ov)
        elif u_end < p_end:
            # The dream is interrupted: the sleeper stays in REM and calms within seconds.
            t_end = t_on + float(rng.uniform(1.0, 3.0))
            if t_end < nm["end"]:
                new_ev.append(self._end_nightmare(nm, t_end, "haptic"))

    def _wake_from_nightmare(
        self,
        nm: dict,
        onset: int,
        rng: np.random.Generator,
        new_ev: list[dict],
        new_ov: list[_Overlay],
    ) -> None:
        """Woken by a stimulus: a short awakening (as a sound's), and the nightmare is over."""
        dur = float(rng.uniform(20.0, 60.0))
        t0 = onset / self.sfreq + float(rng.uniform(0.3, 1.0))
        self._stimulus_arousal(onset, t0, dur, True, new_ev, new_ov)
        if t0 < nm["end"]:
            new_ev.append(self._end_nightmare(nm, t0, "awakening"))

    def _evoked_shapes(self, n: int) -> tuple[list, list, np.ndarray, np.ndarray]:
        """Unit Gaussians of the evoked response over ``n`` samples (cached: every stimulus
        needs the same ones): the troughs and peaks of the first wave and of the up to 3
        extra cycles, the spindle envelope and the spindle's phase ramp (no random phase)."""
        if self._evoked_cache is None or len(self._evoked_cache[2]) != n:
            tt = np.arange(n) / self.sfreq
            down = [np.exp(-0.5 * ((tt - 0.5) / 0.13) ** 2)]
            up = [np.exp(-0.5 * ((tt - 1.0) / 0.17) ** 2)]
            for i in range(3):
                down.append(np.exp(-0.5 * ((tt - 1.5 - i) / 0.14) ** 2))
                up.append(np.exp(-0.5 * ((tt - 2.0 - i) / 0.17) ** 2))
            sp_env = np.exp(-0.5 * ((tt - 1.05) / 0.3) ** 2)
            self._evoked_cache = (down, up, sp_env, 2 * np.pi * self.person.spindle_hz * tt)
        return self._evoked_cache

    def _evoked_overlay(self, onset: int, gain: float, rng: np.random.Generator) -> _Overlay:
        """Evoked SO + phase-locked spindle + short SO train, scaled by ``gain``."""
        sf = self.sfreq
        p = self.person
        dur = 5.0
        n = round(dur * sf)
        amp = gain * p.so_amp * p.eeg_scale * rng.uniform(1.0, 1.4)
        n_extra = int(rng.integers(1, 4))
        sp_amp = gain * rng.uniform(12.0, 20.0) * p.eeg_scale
        sp_phase = float(rng.uniform(0, 2 * np.pi))

        def build() -> tuple[np.ndarray | None, np.ndarray | None]:
            down, up, sp_env, sp_arg = self._evoked_shapes(n)
            # First wave: trough at 0.5 s, peak at 1.0 s; then n_extra 1-Hz cycles decaying.
            w = -amp * down[0]
            w += 0.75 * amp * up[0]
            for i in range(n_extra):
                a = amp * 0.6 ** (i + 1)
                w += -a * down[i + 1]
                w += 0.75 * a * up[i + 1]
            spin = sp_amp * sp_env
            spin *= np.sin(sp_arg + sp_phase)
            add = np.zeros((6, n))
            add[_C4] = (w + spin) * 1e-6
            add[_FPZ] = (1.3 * w + 0.55 * spin) * 1e-6
            add[_E1] = (0.75 * w + 0.3 * spin) * 1e-6
            return add, None

        return _Overlay(onset, min(onset + n, self.info.n_samples), build)

    def _stimulus_arousal(
        self,
        onset: int,
        t0: float,
        dur: float,
        wake: bool,
        new_ev: list[dict],
        new_ov: list[_Overlay],
    ) -> None:
        """An arousal a stimulus (heard at ``onset``) caused from ``t0`` for ``dur`` s; with
        ``wake``, a short awakening: stage W, then back to the planned stage."""
        sf = self.sfreq
        key = (3, onset, len(self._stimuli))
        start = round(t0 * sf)
        new_ov.append(self._arousal_overlay(start, dur, key))
        new_ev.append({"t": t0, "event": "arousal", "duration": round(dur, 2), "cause": "stimulus"})
        if not wake:
            return
        new_ev.append({"t": t0, "event": "stage", "stage": "W", "cause": "stimulus"})
        back = min(t0 + dur, self.info.duration - 1.0 / sf)
        new_ev.append(
            {
                "t": back,
                "event": "stage",
                "stage": self.stage_at(round(back * sf)),
                "cause": "stimulus",
            }
        )
        new_ov.append(self._wake_overlay(start, dur, key))

    def _wake_overlay(self, start: int, dur: float, key: tuple[int, ...]) -> _Overlay:
        """A short awakening: alpha, blinks and wake muscle tone over damped sleep EEG."""
        sf = self.sfreq
        n = round(dur * sf)
        p = self.person

        def build() -> tuple[np.ndarray | None, np.ndarray | None]:
            rng = self._rng(_S_OVERLAY, 4, *key[1:])
            tt = np.arange(n) / sf
            env = _smoothstep(tt / 1.0) * _smoothstep((dur - tt) / 2.0)
            add = np.zeros((6, n))
            alpha = _narrowband(rng, n, sf, p.alpha_hz, 1.0) * 18.0 * p.eeg_scale
            beta = _narrowband(rng, n, sf, 20.0, 5.0) * 5.0
            add[_C4] = (alpha + beta) * env * 1e-6
            add[_FPZ] = (0.5 * alpha + 1.3 * beta) * env * 1e-6
            add[_E1] = 0.4 * add[_FPZ]
            for t0 in rng.uniform(0.5, max(dur - 1.0, 0.6), int(dur / 8) + 1):
                i0 = round(t0 * sf)
                bl = rng.uniform(80, 200) * np.exp(
                    -0.5 * ((tt[: round(0.5 * sf)] - 0.15) / 0.06) ** 2
                )
                m = min(len(bl), n - i0)
                add[_FPZ, i0 : i0 + m] += bl[:m] * 1e-6
                add[_E1, i0 : i0 + m] += 0.35 * bl[:m] * 1e-6
            emg = _bandnoise(rng, n, sf, 20.0, min(110.0, sf / 2.2))
            add[_CHIN] = emg * env * _EMG_RMS["W"] * p.emg_scale * 1e-6
            return add, 1.0 - 0.65 * env

        return _Overlay(start, min(start + n, self.info.n_samples), build)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _runs(hyp: Sequence[str], stage: str) -> list[tuple[int, int]]:
    """``[start, stop)`` epoch ranges of consecutive ``stage`` epochs."""
    runs, start = [], None
    for i, s in enumerate([*hyp, ""]):
        if s == stage and start is None:
            start = i
        elif s != stage and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _narrowband(rng: np.random.Generator, n: int, sf: float, f0: float, bw: float) -> np.ndarray:
    """Unit-RMS Gaussian noise with a Gaussian spectral peak at ``f0`` (SD ``bw`` Hz)."""
    freqs = np.fft.rfftfreq(n, 1.0 / sf)
    a = np.exp(-0.25 * ((freqs - f0) / bw) ** 2)
    z = rng.standard_normal((2, len(freqs)))
    x = np.fft.irfft(a * (z[0] + 1j * z[1]), n=n)
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """``rng.uniform(low, high)`` for one scalar, bit for bit and at a third of the cost:
    NumPy draws ``low + (high - low) * next_double``, and ``rng.random()`` is that double."""
    return low + (high - low) * rng.random()


def _bandnoise(rng: np.random.Generator, n: int, sf: float, lo: float, hi: float) -> np.ndarray:
    """Unit-RMS band-limited Gaussian noise between ``lo`` and ``hi`` Hz."""
    freqs = np.fft.rfftfreq(n, 1.0 / sf)
    a = ((freqs >= lo) & (freqs <= hi)).astype(float)
    z = rng.standard_normal((2, len(freqs)))
    x = np.fft.irfft(a * (z[0] + 1j * z[1]), n=n)
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)

"""Causal online event detectors: sleep spindles, slow waves, arousals.

Each detector runs over the stream at the device rate and shares the streaming API of
:mod:`firmware.phase`: ``scan(x, start)`` takes the next samples and returns the
:class:`Event` decided in them; ``snapshot``/``restore`` copy the whole state so the
application can rescan a prefix after it cut a chunk. Every per-sample (and per-block)
computation runs in a fixed order inside a compiled loop, and block-rate work is keyed on
the absolute sample index, so scanning in pieces of any size gives exactly the events of
one whole scan.

* :class:`SpindleDetector` -- a causal version of YASA's ``spindles_detect`` (Vallat &
  Walker 2021, eLife 10:e70092; after Lacourse et al. 2019, J Neurosci Methods 316:3-11):
  11-16 Hz band-pass, then three per-sample features over short trailing windows --
  the sigma RMS against a running threshold (its 0.8 quantile over the last minutes,
  adaptive to the night, no future data), the sigma/broadband power ratio and the sigma/broadband
  correlation. A spindle is a run where all three hold for 0.5-2 s. Two events per
  spindle: an early one (``confirmed=False``) once the run has lasted ``early_s``
  (~0.35 s after onset; the Portiloop idea of cueing while the spindle is still on), and
  the completed one (``confirmed=True``) once it has ended.
* :class:`SlowWaveDetector` -- the Massimini et al. 2004 / Carrier et al. 2011 criteria
  with YASA ``sw_detect`` defaults, on a causal 0.3-1.5 Hz band-pass: a negative
  half-wave 0.3-1.5 s with its trough at -40..-200 µV, followed by a positive half-wave
  0.1-1 s peaking at 10..150 µV, peak-to-peak 75..350 µV. Decided at the zero crossing
  that ends the positive half-wave.
* :class:`ArousalDetector` -- the AASM arousal idea (an abrupt shift of EEG frequency to
  alpha/beta lasting >= 3 s after stable sleep) on 8-30 Hz power against a running
  baseline, with optional chin-EMG bursts and accelerometer movement as further signs.
  Early event when the criterion is met (the moment to pause stimulation), completed event
  when it is over.
* :class:`RemDistressDetector` -- nightmare distress: heart rate from ECG R peaks rising
  over a running baseline, qualified by chin-EMG tone or twitches over the atonic REM
  floor or by movement; onset, a periodic tick while it lasts, end when the heart calms.

Why numba: every detector is a sequential state machine over 7.2 M samples per 8-h night;
a Python loop would take tens of seconds, compiled they take a fraction of a second and
keep the exact order of operations regardless of how the stream is cut.

Reported ``onset_index``/``end_index`` of spindles and arousals are shifted back by a fixed
``lag_s`` (the delay of the causal filter plus the smoothing), so they estimate where the
event is in the EEG; ``decision_index`` is always the sample at which the detector knew.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numba
import numpy as np
from scipy import signal

from firmware.dsp import copy_state
from firmware.phase import _biquads

logger = logging.getLogger(__name__)

__all__ = [
    "ArousalDetector",
    "Detector",
    "DistressEvent",
    "Event",
    "RemDistressDetector",
    "SlowWaveDetector",
    "SpindleDetector",
]

_FS = 250.0
_BLOCK = 8

# --- MCU cost model (Cortex-M4F at 64 MHz, float32, CMSIS-DSP) ------------------------------
# Assumptions (as firmware.phase / firmware.dsp): a biquad section 16 cycles per sample
# (arm_biquad_cascade_df2T_f32); an exponential moving average (one subtract, one
# multiply-accumulate, load/store) 4 cycles; VSQRT.F32 and VDIV.F32 14 cycles each; logf
# ~60 cycles (CMSIS fast version); a compare-and-branch 2 cycles; the state machine of a
# detector ~20 cycles per sample in the common (idle) path.
CYCLES_PER_SECTION_SAMPLE = 16
CYCLES_PER_EMA = 4
CYCLES_PER_SQRT = 14
CYCLES_PER_DIV = 14
CYCLES_PER_LOG = 60
CYCLES_PER_COMPARE = 2
CYCLES_STATE_MACHINE = 20

# Row layout of the compiled loops' output: confirmed, onset, end, decision, amplitude,
# frequency, source bits.
_N_COLS = 7
_SRC_EEG, _SRC_EMG, _SRC_MOVE = 1, 2, 4


@dataclass(frozen=True)
class Event:
    """A detected event.

    Attributes
    ----------
    kind : str
        ``"spindle"``, ``"slow_wave"`` or ``"arousal"``.
    onset_index : int
        Estimated first sample of the event in the EEG.
    end_index : int
        Estimated last sample (inclusive). For an early event (``confirmed=False``) the
        end is not known yet and ``end_index == decision_index``.
    decision_index : int
        First sample at which the event is known (the detector is causal: every sample
        after it may change without changing this event).
    amplitude_uv : float
        Spindle: peak sigma-band amplitude; slow wave: peak-to-peak of the band-passed
        wave; arousal: peak RMS of the 8-30 Hz EEG (µV).
    freq_hz : float
        Spindle: mean frequency from zero crossings; slow wave: 1 / duration; arousal: NaN.
    confirmed : bool
        ``False`` for an early decision (spindle still on, arousal criterion just met),
        ``True`` for the completed event.
    source : str
        For arousals, the signs seen (``"eeg"``, ``"emg"``, ``"movement"``, joined by
        ``+``); empty otherwise.
    """

    kind: str
    onset_index: int
    end_index: int
    decision_index: int
    amplitude_uv: float
    freq_hz: float
    confirmed: bool = True
    source: str = ""


@runtime_checkable
class Detector(Protocol):
    """The streaming API every detector implements."""

    sfreq: float
    block: int

    def scan(self, x, start: int) -> list[Event]:
        """Process the next samples (absolute index of the first is ``start``)."""
        ...

    def snapshot(self) -> object:
        """A copy of the full state."""
        ...

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        ...


def _alpha(tau_s: float, rate: float) -> float:
    """Coefficient of an exponential moving average with time constant ``tau_s``."""
    return 1.0 - math.exp(-1.0 / (tau_s * rate))


def _bandpass(band: tuple[float, float], sfreq: float, order: int) -> np.ndarray:
    nyq = sfreq / 2
    if not 0 < band[0] < band[1]:
        raise ValueError(f"Band must satisfy 0 < low < high, got {band}.")
    if band[1] >= nyq:  # the band reaches Nyquist: a high-pass keeps what there is
        return signal.butter(order, band[0], "highpass", fs=sfreq, output="sos")
    return signal.butter(order, band, "bandpass", fs=sfreq, output="sos")


# --- compiled kernels -----------------------------------------------------------------------

# Spindle state (float64 array).
(
    _SP_MS,  # moving sum of sigma^2 (RMS window)
    _SP_MB,  # moving sum of broadband^2 (correlation window)
    _SP_MSB,  # moving sum of sigma*broadband
    _SP_RS,  # EMA of sigma^2 (relative-power window)
    _SP_RB,  # EMA of broadband^2 (relative-power window)
    _SP_MU,  # running mean of the sigma RMS (the step scale of the quantile tracker)
    _SP_Q,  # running quantile of the sigma RMS (the threshold)
    _SP_NUPD,  # baseline updates so far
    _SP_IN,  # inside a candidate run
    _SP_ON,  # onset (first active sample)
    _SP_LAST,  # last active sample
    _SP_NACT,  # zero crossings of sigma up to the last active sample
    _SP_EARLY,  # early event emitted for this run
    _SP_PEAK,  # peak |sigma| in the run
    _SP_NZC,  # zero crossings of sigma in the run
    _SP_PREV,  # previous sigma sample
    _SP_SIZE,
) = range(17)


@numba.njit(cache=True)
def _spindle_loop(
    s: np.ndarray,
    b: np.ndarray,
    start: int,
    st: np.ndarray,
    ring: np.ndarray,
    p: np.ndarray,
) -> np.ndarray:  # pragma: no cover
    """Spindle state machine over sigma-band ``s`` and broadband ``b`` samples.

    ``ring`` (3, W) holds the last W products sigma^2, broadband^2, sigma*broadband of the
    moving window. ``p`` = [unused, a_rel, a_base_min, block, quantile, rel_thr, corr_thr,
    min_rms, max_thr, gap, min_dur, max_dur, early, lag, warmup_blocks, sfreq]."""
    w = ring.shape[1]
    fs = p[15]
    a_rel, a_base, blk = p[1], p[2], int(p[3])
    quant, rel_thr, corr_thr, min_rms, max_thr = p[4], p[5], p[6], p[7], p[8]
    gap, min_dur, max_dur, early, lag, warm = p[9], p[10], p[11], p[12], p[13], p[14]
    n = s.shape[0]
    out = np.empty((n // 50 + 4, _N_COLS))
    k = 0
    ms, mb, msb, rs, rb = st[_SP_MS], st[_SP_MB], st[_SP_MSB], st[_SP_RS], st[_SP_RB]
    mu, q, nupd = st[_SP_MU], st[_SP_Q], st[_SP_NUPD]
    inside, on, last, nact = st[_SP_IN], st[_SP_ON], st[_SP_LAST], st[_SP_NACT]
    emitted, peak, nzc, prev = st[_SP_EARLY], st[_SP_PEAK], st[_SP_NZC], st[_SP_PREV]
    for i in range(n):
        idx = start + i
        si = s[i]
        bi = b[i]
        # Moving sums over the last W samples (a bounded window, as YASA's 0.3-s ones: an
        # exponential average would leave a long tail after a strong spindle). Indexed by
        # the absolute sample, and recomputed from the ring once per wrap so rounding
        # cannot drift over a night.
        pos = idx % w
        ms += si * si - ring[0, pos]
        mb += bi * bi - ring[1, pos]
        msb += si * bi - ring[2, pos]
        ring[0, pos] = si * si
        ring[1, pos] = bi * bi
        ring[2, pos] = si * bi
        if pos == w - 1:
            ms = ring[0].sum()
            mb = ring[1].sum()
            msb = ring[2].sum()
        rs += a_rel * (si * si - rs)
        rb += a_rel * (bi * bi - rb)
        rms = np.sqrt(max(ms, 0.0) / w)
        # Threshold of the sigma RMS, once per DMA block: a running quantile, tracked by
        # stochastic approximation (step up by quant, down by 1 - quant, so it settles
        # where a share 1 - quant of the blocks lies above it; steps scaled by the running
        # mean RMS). YASA's offline threshold, mean + 1.5 SD trimmed 10 % each side, lies
        # at the ~81st percentile of the moving RMS; a quantile is as robust to artefacts
        # and needs no sorting or buffer. Large steps at first so it settles quickly.
        if (idx + 1) % blk == 0:
            nupd += 1.0
            a = max(1.0 / nupd, a_base)
            if nupd == 1.0:
                q = rms
            mu += a * (rms - mu)
            if rms > q:
                q += a * mu * quant
            else:
                q -= a * mu * (1.0 - quant)
        active = False
        if nupd > warm and rms > min_rms:
            thr = min(q, max_thr)
            corr = msb / np.sqrt(max(ms, 0.0) * max(mb, 0.0) + 1e-30)
            rel = rs / (rb + 1e-30)
            active = rms >= thr and rel >= rel_thr and corr >= corr_thr
        if inside > 0:
            if (prev < 0.0) != (si < 0.0):
                nzc += 1.0
            if abs(si) > peak:
                peak = abs(si)
        if active:
            if inside == 0:
                inside = 1.0
                on = float(idx)
                emitted = 0.0
                peak = abs(si)
                nzc = 0.0
            last = float(idx)
            nact = nzc
            # Early decision: active for `early` samples of a run that has not yet
            # outgrown a spindle.
            if emitted == 0 and idx - on + 1 >= early and idx - on + 1 <= max_dur:
                emitted = 1.0
                out[k, 0] = 0.0
                out[k, 1] = on - lag
                out[k, 2] = idx
                out[k, 3] = idx
                out[k, 4] = peak
                out[k, 5] = nzc * 0.5 * fs / max(idx - on, 1.0)
                out[k, 6] = 0.0
                k += 1
        elif inside > 0 and idx - last > gap:
            dur = last - on + 1
            if min_dur <= dur <= max_dur:
                out[k, 0] = 1.0
                out[k, 1] = on - lag
                out[k, 2] = last - lag
                out[k, 3] = idx
                out[k, 4] = peak
                out[k, 5] = nact * 0.5 * fs / max(last - on, 1.0)
                out[k, 6] = 0.0
                k += 1
            inside = 0.0
        prev = si
    st[_SP_MS], st[_SP_MB], st[_SP_MSB], st[_SP_RS], st[_SP_RB] = ms, mb, msb, rs, rb
    st[_SP_MU], st[_SP_Q], st[_SP_NUPD] = mu, q, nupd
    st[_SP_IN], st[_SP_ON], st[_SP_LAST], st[_SP_NACT] = inside, on, last, nact
    st[_SP_EARLY], st[_SP_PEAK], st[_SP_NZC], st[_SP_PREV] = emitted, peak, nzc, prev
    return out[:k]


# Slow-wave state.
(
    _SW_PHASE,  # 0 waiting for a down-crossing, 1 negative half-wave, 2 positive half-wave
    _SW_DOWN,  # index of the down-crossing that opened the wave
    _SW_UP,  # index of the up-crossing (mid-crossing)
    _SW_MIN,  # trough value
    _SW_MAX,  # positive peak value
    _SW_PREV,  # previous sample
    _SW_HAS,  # a previous sample exists
    _SW_SIZE,
) = range(8)


@numba.njit(cache=True)
def _slow_wave_loop(
    y: np.ndarray, start: int, st: np.ndarray, p: np.ndarray
) -> np.ndarray:  # pragma: no cover
    """Zero-crossing state machine over the band-passed EEG ``y``.

    ``p`` = [neg_dur_min, neg_dur_max, pos_dur_min, pos_dur_max, neg_min, neg_max,
    pos_min, pos_max, ptp_min, ptp_max, sfreq] (durations in samples, amplitudes µV >= 0).
    """
    n = y.shape[0]
    out = np.empty((n // 50 + 4, _N_COLS))
    k = 0
    phase, down, up = st[_SW_PHASE], st[_SW_DOWN], st[_SW_UP]
    vmin, vmax, prev, has = st[_SW_MIN], st[_SW_MAX], st[_SW_PREV], st[_SW_HAS]
    for i in range(n):
        idx = start + i
        v = y[i]
        if has > 0 and prev >= 0.0 > v:  # down-crossing: ends a positive half-wave
            if phase == 2:
                pos_dur = idx - up
                ptp = vmax - vmin
                if (
                    p[2] < pos_dur < p[3]
                    and p[6] < vmax < p[7]
                    and p[8] < ptp < p[9]
                    and p[4] < -vmin < p[5]
                ):
                    out[k, 0] = 1.0
                    out[k, 1] = down
                    out[k, 2] = idx - 1
                    out[k, 3] = idx
                    out[k, 4] = ptp
                    out[k, 5] = p[10] / (idx - down)
                    out[k, 6] = 0.0
                    k += 1
            phase = 1.0
            down = float(idx)
            vmin = v
        elif has > 0 and prev < 0.0 <= v:  # up-crossing: ends a negative half-wave
            if phase == 1:
                neg_dur = idx - down
                if p[0] < neg_dur < p[1] and p[4] < -vmin < p[5]:
                    phase = 2.0
                    up = float(idx)
                    vmax = v
                else:
                    phase = 0.0
        elif phase == 1:
            if v < vmin:
                vmin = v
        elif phase == 2 and v > vmax:
            vmax = v
        prev = v
        has = 1.0
    st[_SW_PHASE], st[_SW_DOWN], st[_SW_UP] = phase, down, up
    st[_SW_MIN], st[_SW_MAX], st[_SW_PREV], st[_SW_HAS] = vmin, vmax, prev, has
    return out[:k]


# Arousal state.
(
    _AR_PE,  # moving sum of the 8-30 Hz EEG squared
    _AR_PM,  # EMA of the EMG squared
    _AR_BE,  # baseline: running mean of log EEG power
    _AR_BM,  # baseline: running mean of log EMG power
    _AR_NUPD,  # baseline updates so far
    _AR_RUN_E,  # first sample of the current EEG run (-1: none)
    _AR_RUN_M,  # first sample of the current EMG run
    _AR_RUN_A,  # first sample of the current movement run
    _AR_LAST_E,  # last sample the EEG sign was on
    _AR_LAST_M,
    _AR_LAST_A,
    _AR_IN,  # inside an arousal (criterion met)
    _AR_ON,  # onset of the arousal
    _AR_LAST,  # last sample any sign was on during the arousal
    _AR_PEAK,  # peak EEG RMS (µV)
    _AR_SRC,  # source bits seen
    _AR_G0,  # slow mean of accelerometer axis 0..2 (gravity)
    _AR_G1,
    _AR_G2,
    _AR_HAS_G,  # the gravity estimate is initialised
    _AR_SIZE,
) = range(21)


_NO_HOLD = np.empty(0, dtype=np.uint8)

#: Nats around an arousal threshold within which the kernel takes the logarithm exactly.
_AROUSAL_LOG_MARGIN = 1e-9

#: Band power (µV²) below which an input is dead rather than quiet: the ADC's own noise
#: alone is about 0.05 µV² in the arousal bands, a lead-off reads exact zeros.
_DEAD_POWER_UV2 = 1e-4


@numba.njit(cache=True)
def _arousal_loop(
    e: np.ndarray,
    m: np.ndarray,
    acc: np.ndarray,
    start: int,
    st: np.ndarray,
    ring: np.ndarray,
    p: np.ndarray,
    hold: np.ndarray,
) -> np.ndarray:  # pragma: no cover
    """Arousal state machine over band-passed EEG ``e``, EMG ``m`` (empty when absent) and
    accelerometer rows ``acc`` (0, 1 or 3 rows). The baselines are not updated at samples
    where ``hold`` (uint8, empty: nowhere) is set.

    ``ring`` holds the last W squared EEG samples of the moving window.
    ``p`` = [log_margin, a_emg, a_base, block, eeg_ratio_log, emg_ratio_log, move_g,
    eeg_min, emg_min, move_min, gap, lag, warmup_blocks, a_grav, sign_gap].

    The per-sample tests ``log(power) - baseline > log(ratio)`` take the logarithm only
    when the power lies within ``log_margin`` (nats) of the threshold, which is set once
    per baseline update: ``exp`` twice a block instead of ``log`` twice a sample. The margin
    (1e-9) is a million times the rounding of either side, so every outcome is the one the
    logarithm gives (``log_margin = inf`` takes it every sample; the tests compare both)."""
    margin, a_m, a_base, blk = p[0], p[1], p[2], int(p[3])
    w = ring.shape[0]
    r_e, r_m, move_g = p[4], p[5], p[6]
    eeg_min, emg_min, move_min, gap, lag, warm, a_g, sgap = (
        p[7],
        p[8],
        p[9],
        p[10],
        p[11],
        p[12],
        p[13],
        p[14],
    )
    n = e.shape[0]
    has_emg = m.shape[0] == n
    has_hold = hold.shape[0] == n
    n_acc = acc.shape[0]
    out = np.empty((n // 50 + 4, _N_COLS))
    k = 0
    # Powers (plus the 1e-12 floor) at or below lo_* fail the test, at or above hi_* pass.
    lo_e, hi_e = np.exp(st[_AR_BE] + r_e - margin), np.exp(st[_AR_BE] + r_e + margin)
    lo_m, hi_m = np.exp(st[_AR_BM] + r_m - margin), np.exp(st[_AR_BM] + r_m + margin)
    for i in range(n):
        idx = start + i
        ei = e[i]
        # EEG power over a bounded trailing window (an exponential average would keep a
        # strong 2-s burst above threshold for seconds and make it look like 3 s);
        # recomputed from the ring once per wrap so rounding cannot drift.
        pos = idx % w
        st[_AR_PE] += ei * ei - ring[pos]
        ring[pos] = ei * ei
        if pos == w - 1:
            st[_AR_PE] = ring.sum()
        pe = max(st[_AR_PE], 0.0) / w
        u_e = pe + 1e-12
        u_m = 1e-12
        if has_emg:
            mi = m[i]
            st[_AR_PM] += a_m * (mi * mi - st[_AR_PM])
            u_m = st[_AR_PM] + 1e-12
        # Baseline per DMA block in the log domain (a geometric mean: a burst moves it
        # little); cumulative at first so it settles quickly, then a slow EMA so a long
        # stretch of wake becomes the new normal instead of an endless arousal.
        # A dead input (a lead-off reads exact zeros) leaves the baselines where they were:
        # learnt on nothing, they would make the signal's return look like an arousal.
        # Nor does bad signal (a flat stretch reads the converter's noise, a pop saturates):
        # learnt on it, the baselines would make good signal look like an arousal, or hide one.
        if (idx + 1) % blk == 0 and pe > _DEAD_POWER_UV2 and not (has_hold and hold[i]):
            st[_AR_NUPD] += 1.0
            a = max(1.0 / st[_AR_NUPD], a_base)
            st[_AR_BE] += a * (np.log(u_e) - st[_AR_BE])
            lo_e, hi_e = np.exp(st[_AR_BE] + r_e - margin), np.exp(st[_AR_BE] + r_e + margin)
            if has_emg and st[_AR_PM] > _DEAD_POWER_UV2:
                st[_AR_BM] += a * (np.log(u_m) - st[_AR_BM])
                lo_m = np.exp(st[_AR_BM] + r_m - margin)
                hi_m = np.exp(st[_AR_BM] + r_m + margin)
        ready = st[_AR_NUPD] > warm
        on_e = False
        on_m = False
        if ready:
            if u_e >= hi_e:
                on_e = True
            elif u_e > lo_e:  # near the threshold, or NaN bounds: decide exactly
                on_e = np.log(u_e) - st[_AR_BE] > r_e
            if has_emg:
                if u_m >= hi_m:
                    on_m = True
                elif u_m > lo_m:
                    on_m = np.log(u_m) - st[_AR_BM] > r_m
        on_a = False
        if n_acc > 0:
            # Movement: the accelerometer vector minus its slow mean (gravity), so a turn
            # of the head and a shake both count; a still head reads ~0 whatever its pose.
            if st[_AR_HAS_G] == 0:
                for j in range(n_acc):
                    st[_AR_G0 + j] = acc[j, i]
                st[_AR_HAS_G] = 1.0
            d2 = 0.0
            for j in range(n_acc):
                st[_AR_G0 + j] += a_g * (acc[j, i] - st[_AR_G0 + j])
                dj = acc[j, i] - st[_AR_G0 + j]
                d2 += dj * dj
            on_a = ready and d2 > move_g * move_g
        # Runs of each sign, bridging gaps shorter than sgap (a dip of a second in alpha
        # does not restart the 3-s count).
        met = 0
        if on_e:
            if st[_AR_RUN_E] < 0 or idx - st[_AR_LAST_E] > sgap:
                st[_AR_RUN_E] = idx
            st[_AR_LAST_E] = idx
            if idx - st[_AR_RUN_E] + 1 >= eeg_min:
                met |= _SRC_EEG
        elif st[_AR_RUN_E] >= 0 and idx - st[_AR_LAST_E] > sgap:
            st[_AR_RUN_E] = -1.0
        if on_m:
            if st[_AR_RUN_M] < 0 or idx - st[_AR_LAST_M] > sgap:
                st[_AR_RUN_M] = idx
            st[_AR_LAST_M] = idx
            if idx - st[_AR_RUN_M] + 1 >= emg_min:
                met |= _SRC_EMG
        elif st[_AR_RUN_M] >= 0 and idx - st[_AR_LAST_M] > sgap:
            st[_AR_RUN_M] = -1.0
        if on_a:
            if st[_AR_RUN_A] < 0 or idx - st[_AR_LAST_A] > sgap:
                st[_AR_RUN_A] = idx
            st[_AR_LAST_A] = idx
            if idx - st[_AR_RUN_A] + 1 >= move_min:
                met |= _SRC_MOVE
        elif st[_AR_RUN_A] >= 0 and idx - st[_AR_LAST_A] > sgap:
            st[_AR_RUN_A] = -1.0
        if st[_AR_IN] > 0:
            rms = np.sqrt(pe)
            if on_e or on_m or on_a:
                st[_AR_LAST] = idx
            st[_AR_SRC] = float(int(st[_AR_SRC]) | met)
            if rms > st[_AR_PEAK]:
                st[_AR_PEAK] = rms
            if idx - st[_AR_LAST] > gap:
                out[k, 0] = 1.0
                out[k, 1] = st[_AR_ON] - lag
                out[k, 2] = st[_AR_LAST] - lag
                out[k, 3] = idx
                out[k, 4] = st[_AR_PEAK]
                out[k, 5] = np.nan
                out[k, 6] = st[_AR_SRC]
                k += 1
                st[_AR_IN] = 0.0
        elif met:
            # Criterion met: the arousal began where the earliest qualifying run began.
            rms = np.sqrt(pe)
            on = float(idx)
            if met & _SRC_EEG:
                on = min(on, st[_AR_RUN_E])
            if met & _SRC_EMG:
                on = min(on, st[_AR_RUN_M])
            if met & _SRC_MOVE:
                on = min(on, st[_AR_RUN_A])
            st[_AR_IN] = 1.0
            st[_AR_ON] = on
            st[_AR_LAST] = idx
            st[_AR_PEAK] = rms
            st[_AR_SRC] = float(met)
            out[k, 0] = 0.0
            out[k, 1] = on - lag
            out[k, 2] = idx
            out[k, 3] = idx
            out[k, 4] = rms
            out[k, 5] = np.nan
            out[k, 6] = float(met)
            k += 1
    return out[:k]


# --- detectors ------------------------------------------------------------------------------


class _Streaming:
    """Contiguity check and snapshot/restore of the attributes named in ``_STATE``."""

    _STATE: tuple[str, ...] = ()
    kind = ""

    def __init__(self, sfreq: float, block: int) -> None:
        if sfreq <= 0 or block < 1:
            raise ValueError(f"Need sfreq > 0 and block >= 1, got {sfreq}, {block}.")
        self.sfreq = float(sfreq)
        self.block = int(block)
        self._next: int | None = None

    def _check_start(self, start: int, n: int) -> None:
        if self._next is not None and start != self._next:
            raise ValueError(f"Samples must be contiguous: expected {self._next}, got {start}.")
        self._next = start + n

    def _samples(self, seconds: float) -> int:
        return int(round(seconds * self.sfreq))

    def _events(self, rows: np.ndarray) -> list[Event]:
        out = []
        for r in rows:
            bits = int(r[6])
            src = "+".join(
                name
                for bit, name in ((_SRC_EEG, "eeg"), (_SRC_EMG, "emg"), (_SRC_MOVE, "movement"))
                if bits & bit
            )
            out.append(
                Event(
                    self.kind,
                    int(r[1]),
                    int(r[2]),
                    int(r[3]),
                    float(r[4]),
                    float(r[5]),
                    bool(r[0] > 0),
                    src,
                )
            )
        return out

    def snapshot(self) -> object:
        """A copy of the full state."""
        return copy_state(tuple(getattr(self, a) for a in (*self._STATE, "_next")))

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        values = copy_state(state)
        for a, v in zip((*self._STATE, "_next"), values, strict=True):  # type: ignore[arg-type]
            setattr(self, a, v)


class SpindleDetector(_Streaming):
    """Causal sleep-spindle detector with an early (cue) and a completed decision.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block (the baseline is updated once per block, as on the device).
    band : tuple of float
        Sigma band (Hz); a Butterworth band-pass of order ``order`` per edge.
    broad : tuple of float
        Broadband the sigma power is compared with (YASA: 1-30 Hz).
    order : int
        Butterworth order of both band-passes.
    window_s : float
        Moving window of the sigma RMS and of the correlation (YASA: 0.3 s, centred;
        here trailing, hence ``lag_s`` of half of it plus the filter delay).
    rel_tau_s : float
        Time constant of the relative sigma power (YASA: 2-s STFT windows).
    baseline_tau_s : float
        Memory of the running threshold of the sigma RMS.
    rms_quantile : float
        The RMS threshold is this running quantile of the sigma RMS (YASA's offline
        threshold, mean + 1.5 trimmed SD, lies near the 0.81 quantile of the night).
    rel_threshold : float
        Minimal sigma / broadband power ratio.
    corr_threshold : float
        Minimal correlation between sigma-band and broadband EEG.
    min_rms_uv : float
        Absolute floor of the sigma RMS (µV): nothing smaller is a spindle (a flat lead).
    max_threshold_uv : float
        Cap of the RMS threshold (µV), as YASA caps its threshold, so a night full of
        artefacts does not silence the detector.
    duration : tuple of float
        Accepted spindle duration (s).
    gap_s : float
        A run ends after this long without the criteria; shorter dips are bridged (YASA
        merges spindles closer than 0.5 s). The completed decision comes ``gap_s`` after
        the end.
    early_s : float
        Active time after onset at which the early event is emitted.
    lag_s : float
        Delay of the band-pass plus the smoothing; onsets and ends are reported this much
        earlier than where the causal criteria crossed.
    warmup_s : float
        No detection before this much signal has set the baseline.
    """

    kind = "spindle"
    _STATE = ("_zs", "_zb", "_st", "_ring")

    def __init__(
        self,
        sfreq: float = _FS,
        block: int = _BLOCK,
        band: tuple[float, float] = (11.0, 16.0),
        broad: tuple[float, float] = (1.0, 30.0),
        order: int = 2,
        window_s: float = 0.3,
        rel_tau_s: float = 0.5,
        baseline_tau_s: float = 120.0,
        rms_quantile: float = 0.8,
        rel_threshold: float = 0.2,
        corr_threshold: float = 0.4,
        min_rms_uv: float = 2.0,
        max_threshold_uv: float = 10.0,
        duration: tuple[float, float] = (0.5, 2.0),
        gap_s: float = 0.2,
        early_s: float = 0.4,
        lag_s: float = 0.15,
        warmup_s: float = 30.0,
    ) -> None:
        super().__init__(sfreq, block)
        if not 0 < duration[0] < duration[1]:
            raise ValueError(f"duration must satisfy 0 < min < max, got {duration}.")
        if not 0 < early_s <= duration[1]:
            raise ValueError(f"early_s must be in (0, {duration[1]}], got {early_s}.")
        self.band = band
        self.broad = broad
        self.sos_sigma = _bandpass(band, sfreq, order)
        self.sos_broad = _bandpass(broad, sfreq, order)
        self.duration = duration
        self.early_s = early_s
        self._p = np.array(
            [
                0.0,
                _alpha(rel_tau_s, sfreq),
                _alpha(baseline_tau_s, sfreq / block),
                block,
                rms_quantile,
                rel_threshold,
                corr_threshold,
                min_rms_uv,
                max_threshold_uv,
                self._samples(gap_s),
                self._samples(duration[0]),
                self._samples(duration[1]),
                self._samples(early_s),
                self._samples(lag_s),
                warmup_s * sfreq / block,
                sfreq,
            ]
        )
        self._ring = np.zeros((3, max(1, self._samples(window_s))))
        self._zs = np.zeros((self.sos_sigma.shape[0], 2))
        self._zb = np.zeros((self.sos_broad.shape[0], 2))
        self._st = np.zeros(_SP_SIZE)

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: two band-passes; three moving sums (a product, an
        add, a subtract and a ring store each, counted as an EMA) and two EMAs; the RMS
        (sqrt + divide), the correlation (sqrt + divide) and the relative power (divide);
        three compares and the state machine; the per-block quantile tracker (one EMA, a
        compare, a multiply-add) spread over the block. The once-per-wrap resum of the
        ring (3 x 75 adds every 75 samples) adds ~3 cycles per sample."""
        filt = (self.sos_sigma.shape[0] + self.sos_broad.shape[0]) * CYCLES_PER_SECTION_SAMPLE
        feats = 5 * CYCLES_PER_EMA + 2 * CYCLES_PER_SQRT + 3 * CYCLES_PER_DIV + 3
        base = (3 * CYCLES_PER_EMA + 4 * CYCLES_PER_COMPARE) // self.block
        return filt + feats + 3 * CYCLES_PER_COMPARE + CYCLES_STATE_MACHINE + base

    def scan(self, x: np.ndarray, start: int) -> list[Event]:
        """Process the next samples of one EEG channel.

        Parameters
        ----------
        x : ndarray, shape (n,)
            EEG in µV.
        start : int
            Absolute index of ``x[0]``; calls must be contiguous.

        Returns
        -------
        list of Event
            In order of decision: early events (``confirmed=False``) and completed ones.
        """
        xs = np.ascontiguousarray(x, dtype=np.float64)
        self._check_start(start, xs.size)
        if xs.size == 0:
            return []
        # The sigma band is taken from the broadband signal, not from the raw EEG: both then
        # carry the broadband filter's phase shift, and a sigma-band band-pass has ~0 phase
        # in its pass band, so the two are in phase within a spindle and their correlation
        # measures how much of the broadband signal the spindle is (as YASA's zero-phase
        # filters do offline).
        b = _biquads(self.sos_broad, self._zb, xs)
        s = _biquads(self.sos_sigma, self._zs, b)
        return self._events(_spindle_loop(s, b, start, self._st, self._ring, self._p))


class SlowWaveDetector(_Streaming):
    """Causal slow-wave detector with the criteria of YASA's ``sw_detect``.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block (kept for the common API; the decision is per sample).
    band : tuple of float
        Causal Butterworth band-pass. YASA filters 0.3-1.5 Hz with a zero-phase FIR whose
        lower transition band reaches down to 0.2 Hz; a causal high-pass edge at 0.3 Hz
        advances the zero crossings and shortens the negative half-waves, so the edge is
        put at 0.2 Hz (on DREAMS excerpt 1, agreement with YASA F1 0.64 -> 0.75).
    order : int
        Butterworth order per edge.
    dur_neg, dur_pos : tuple of float
        Accepted durations (s) of the negative and positive half-waves (open intervals).
    amp_neg, amp_pos, amp_ptp : tuple of float
        Accepted trough depth, positive peak and peak-to-peak amplitude (µV, open).
    """

    kind = "slow_wave"
    _STATE = ("_zi", "_st")

    def __init__(
        self,
        sfreq: float = _FS,
        block: int = _BLOCK,
        band: tuple[float, float] = (0.2, 1.5),
        order: int = 2,
        dur_neg: tuple[float, float] = (0.3, 1.5),
        dur_pos: tuple[float, float] = (0.1, 1.0),
        amp_neg: tuple[float, float] = (40.0, 200.0),
        amp_pos: tuple[float, float] = (10.0, 150.0),
        amp_ptp: tuple[float, float] = (75.0, 350.0),
    ) -> None:
        super().__init__(sfreq, block)
        for name, rng in (
            ("dur_neg", dur_neg),
            ("dur_pos", dur_pos),
            ("amp_neg", amp_neg),
            ("amp_pos", amp_pos),
            ("amp_ptp", amp_ptp),
        ):
            if not 0 <= rng[0] < rng[1]:
                raise ValueError(f"{name} must satisfy 0 <= min < max, got {rng}.")
        self.band = band
        self.sos = _bandpass(band, sfreq, order)
        fs = self.sfreq
        self._p = np.array(
            [
                dur_neg[0] * fs,
                dur_neg[1] * fs,
                dur_pos[0] * fs,
                dur_pos[1] * fs,
                *amp_neg,
                *amp_pos,
                *amp_ptp,
                fs,
            ]
        )
        self._zi = np.zeros((self.sos.shape[0], 2))
        self._st = np.zeros(_SW_SIZE)

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: the band-pass, two sign compares, a min/max
        update; the per-wave checks (a few compares, one divide) are rare and folded in."""
        filt = self.sos.shape[0] * CYCLES_PER_SECTION_SAMPLE
        return filt + 4 * CYCLES_PER_COMPARE + 6

    def scan(self, x: np.ndarray, start: int) -> list[Event]:
        """Process the next samples of one EEG channel (see :meth:`SpindleDetector.scan`).

        Returns
        -------
        list of Event
            Completed slow waves, decided at the down-crossing that ends them.
        """
        xs = np.ascontiguousarray(x, dtype=np.float64)
        self._check_start(start, xs.size)
        if xs.size == 0:
            return []
        y = _biquads(self.sos, self._zi, xs)
        return self._events(_slow_wave_loop(y, start, self._st, self._p))


class ArousalDetector(_Streaming):
    """Causal arousal detector: EEG shift to alpha/beta, EMG bursts, movement.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block (the baselines are updated once per block).
    has_emg : bool
        An EMG row is given to :meth:`scan`.
    accel_axes : int
        0 (no accelerometer), 1 (a magnitude row) or 3 (x, y, z rows), in g.
    eeg_band : tuple of float
        Band of the EEG power (AASM: alpha, theta or > 16 Hz; here alpha/beta 8-30 Hz).
    emg_band : tuple of float
        Band of the EMG power (clipped below Nyquist).
    eeg_window_s : float
        Trailing window of the EEG power; the EEG sign must hold ``eeg_min_s`` plus this
        window (a window reaching back into the shift must not count towards the 3 s).
    emg_tau_s : float
        Smoothing of the EMG power.
    baseline_tau_s : float
        Memory of the running baselines (log power).
    eeg_ratio, emg_ratio : float
        Power over baseline that counts as a shift / a burst (×).
    move_g : float
        Deviation of the accelerometer vector from its slow mean that counts as movement.
    eeg_min_s, emg_min_s, move_min_s : float
        How long each sign must hold (AASM: 3 s of EEG change).
    gap_s : float
        The arousal ends this long after the last sign.
    sign_gap_s : float
        Dips of a sign shorter than this do not break its run.
    lag_s : float
        Reported onsets and ends are shifted back by this delay of filter and smoothing.
    warmup_s : float
        No detection before this much signal has set the baselines (AASM asks for 10 s of
        stable sleep before an arousal).
    """

    kind = "arousal"
    _STATE = ("_ze", "_zm", "_st", "_ring")

    def __init__(
        self,
        sfreq: float = _FS,
        block: int = _BLOCK,
        has_emg: bool = False,
        accel_axes: int = 0,
        eeg_band: tuple[float, float] = (8.0, 30.0),
        emg_band: tuple[float, float] = (10.0, 100.0),
        eeg_window_s: float = 0.5,
        emg_tau_s: float = 0.25,
        baseline_tau_s: float = 60.0,
        eeg_ratio: float = 3.0,
        emg_ratio: float = 4.0,
        move_g: float = 0.05,
        eeg_min_s: float = 3.0,
        emg_min_s: float = 1.0,
        move_min_s: float = 0.5,
        gap_s: float = 1.0,
        sign_gap_s: float = 0.5,
        lag_s: float = 0.25,
        warmup_s: float = 10.0,
    ) -> None:
        super().__init__(sfreq, block)
        if accel_axes not in (0, 1, 3):
            raise ValueError(f"accel_axes must be 0, 1 or 3, got {accel_axes}.")
        if min(eeg_min_s, emg_min_s, move_min_s) < 0.2:
            raise ValueError("eeg_min_s, emg_min_s and move_min_s must be >= 0.2 s.")
        if eeg_ratio <= 1 or emg_ratio <= 1:
            raise ValueError(f"Ratios must exceed 1, got {eeg_ratio}, {emg_ratio}.")
        self.has_emg = bool(has_emg)
        self.accel_axes = int(accel_axes)
        self.sos_eeg = _bandpass(eeg_band, sfreq, 2)
        hi = min(emg_band[1], 0.45 * sfreq)
        self.sos_emg = _bandpass((emg_band[0], hi), sfreq, 2)
        self._p = np.array(
            [
                _AROUSAL_LOG_MARGIN,
                _alpha(emg_tau_s, sfreq),
                _alpha(baseline_tau_s, sfreq / block),
                block,
                math.log(eeg_ratio),
                math.log(emg_ratio),
                move_g,
                self._samples(eeg_min_s + eeg_window_s),
                self._samples(emg_min_s),
                self._samples(move_min_s),
                self._samples(gap_s),
                self._samples(lag_s),
                warmup_s * sfreq / block,
                _alpha(2.0, sfreq),  # gravity: a 2-s mean of the accelerometer
                self._samples(sign_gap_s),
            ]
        )
        self._ring = np.zeros(max(1, self._samples(eeg_window_s)))
        self._ze = np.zeros((self.sos_eeg.shape[0], 2))
        self._zm = np.zeros((self.sos_emg.shape[0], 2))
        st = np.zeros(_AR_SIZE)
        st[[_AR_RUN_E, _AR_RUN_M, _AR_RUN_A]] = -1.0
        self._st = st

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: EEG band-pass, EMA, log and sqrt; with EMG its
        band-pass, EMA and log; per accelerometer axis an EMA and a multiply-accumulate;
        compares and the state machine; per-block baseline EMAs spread over the block."""
        c = self.sos_eeg.shape[0] * CYCLES_PER_SECTION_SAMPLE + CYCLES_PER_EMA
        c += CYCLES_PER_LOG + CYCLES_PER_SQRT
        if self.has_emg:
            c += self.sos_emg.shape[0] * CYCLES_PER_SECTION_SAMPLE + CYCLES_PER_EMA
            c += CYCLES_PER_LOG
        c += self.accel_axes * (CYCLES_PER_EMA + 3)
        c += 6 * CYCLES_PER_COMPARE + CYCLES_STATE_MACHINE
        return c + (2 * CYCLES_PER_EMA + CYCLES_PER_DIV) // self.block

    def _rows(self, x) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Split the input into EEG, EMG and accelerometer rows."""
        if isinstance(x, Mapping):
            eeg, emg, acc = x["eeg"], x.get("emg"), x.get("accel")
        elif isinstance(x, np.ndarray):
            x2 = np.atleast_2d(x)
            eeg = x2[0]
            emg = x2[1] if self.has_emg else None
            acc = x2[1 + self.has_emg :] if self.accel_axes else None
        elif isinstance(x, Sequence):
            eeg = x[0]
            emg = x[1] if len(x) > 1 else None
            acc = x[2] if len(x) > 2 else None
        else:
            raise TypeError(f"Expected an array, a mapping or a tuple of rows, got {type(x)}.")
        eeg = np.ascontiguousarray(eeg, dtype=np.float64)
        if (emg is not None) != self.has_emg:
            raise ValueError(f"Detector built with has_emg={self.has_emg}: EMG row mismatch.")
        if emg is not None:
            emg = np.ascontiguousarray(emg, dtype=np.float64)
        if self.accel_axes == 0:
            if acc is not None:
                raise ValueError("Detector built with accel_axes=0 but accelerometer given.")
        else:
            if acc is None:
                raise ValueError(f"Detector built with accel_axes={self.accel_axes}: no accel.")
            acc = np.ascontiguousarray(np.atleast_2d(acc), dtype=np.float64)
            if acc.shape[0] != self.accel_axes:
                raise ValueError(f"Expected {self.accel_axes} accelerometer rows, got {acc.shape}.")
        for name, row in (("emg", emg), ("accel", acc)):
            if row is not None and row.shape[-1] != eeg.size:
                raise ValueError(f"{name} has {row.shape[-1]} samples, EEG {eeg.size}.")
        return eeg, emg, acc

    def scan(self, x, start: int, bad: np.ndarray | None = None) -> list[Event]:
        """Process the next samples.

        Parameters
        ----------
        x : ndarray or mapping or tuple
            EEG alone (1-D, µV); or rows EEG[, EMG][, accelerometer] as a 2-D array in that
            order; or ``{"eeg": ..., "emg": ..., "accel": ...}``; or a tuple
            ``(eeg, emg_or_None, accel_or_None)``. EMG in µV, accelerometer in g with
            ``accel_axes`` rows. What is given must match the constructor.
        start : int
            Absolute index of the first sample; calls must be contiguous.
        bad : ndarray of bool, shape (n,), optional
            Samples of bad EEG signal (the application's quality check): the baselines
            hold there. Signs are still judged (a movement that spoils the EEG is an
            arousal all the same).

        Returns
        -------
        list of Event
            Early events (criterion met, ``confirmed=False``) and completed arousals.
        """
        eeg, emg, acc = self._rows(x)
        self._check_start(start, eeg.size)
        if eeg.size == 0:
            return []
        hold = _NO_HOLD
        if bad is not None:
            hold = np.ascontiguousarray(bad, dtype=np.uint8)
            if hold.shape != eeg.shape:
                raise ValueError(f"bad has shape {hold.shape}, the EEG {eeg.shape}.")
        e = _biquads(self.sos_eeg, self._ze, eeg)
        m = _biquads(self.sos_emg, self._zm, emg) if emg is not None else np.empty(0)
        a = acc if acc is not None else np.empty((0, eeg.size))
        return self._events(_arousal_loop(e, m, a, start, self._st, self._ring, self._p, hold))


# REM-distress state (float64 array).
(
    _RD_ENV,  # decaying envelope of the ECG peaks (sets the R-peak threshold)
    _RD_ABOVE,  # the ECG is above the threshold
    _RD_LASTBEAT,  # sample of the last accepted R peak (-1: none)
    _RD_NRR,  # R-R intervals in the ring (up to 5)
    _RD_RR0,  # ring of the last five R-R intervals (samples): 5 slots
    _RD_RR1,
    _RD_RR2,
    _RD_RR3,
    _RD_RR4,
    _RD_NBEATS,  # heart-rate estimates so far
    _RD_BASE,  # heart-rate baseline (bpm)
    _RD_HIGH,  # consecutive beats above baseline + rise
    _RD_CALM,  # consecutive beats below baseline + rise / 2 (during distress)
    _RD_IN,  # in distress
    _RD_ON,  # decision sample of the distress onset
    _RD_NEXT,  # next periodic tick while in distress
    _RD_PM,  # EMA of the band-passed chin EMG power
    _RD_BM,  # floor of the log EMG power (fast down, slow up)
    _RD_NBLK,  # blocks seen (EMG floor warm-up)
    _RD_SIGN,  # last sample with a muscle or movement sign (-inf: none)
    _RD_G,  # slow mean of the accelerometer (gravity)
    _RD_HAS_G,
    _RD_HR,  # last heart-rate estimate (bpm)
    _RD_MOVE,  # last sample with movement (-inf: none)
    _RD_SIZE,
) = range(25)


@numba.njit(cache=True)
def _distress_loop(
    ecg: np.ndarray, m: np.ndarray, acc: np.ndarray, start: int, st: np.ndarray, p: np.ndarray
) -> np.ndarray:  # pragma: no cover
    """REM-distress state machine over ECG ``ecg`` (µV), band-passed EMG ``m`` (empty when
    absent) and accelerometer ``acc`` (empty when absent).

    ``p`` = [env_decay, thr_ratio, thr_min, refractory, rr_max, base_n, warm_beats,
    rise_bpm, n_high, n_calm, a_emg, a_floor_down, a_floor_up, emg_ratio_log, move_g,
    a_grav, sign_window, tick, sfreq, block, warm_blocks, need_sign, a_warm].
    Output rows: kind (0 onset, 1 end, 2 tick), onset decision, last movement sample,
    decision, rise over baseline (bpm), heart rate (bpm), unused."""
    decay, thr_ratio, thr_min, refr, rr_max = p[0], p[1], p[2], p[3], p[4]
    base_n, warm, rise, n_high, n_calm = p[5], p[6], p[7], p[8], p[9]
    a_m, a_down, a_up, r_m, move_g, a_g = p[10], p[11], p[12], p[13], p[14], p[15]
    sgap, tick, sf, blk, warm_blk, need_sign = p[16], p[17], p[18], int(p[19]), p[20], p[21]
    n = ecg.shape[0]
    has_emg = m.shape[0] == n
    has_acc = acc.shape[0] == n
    out = np.empty((n // 8 + 4, _N_COLS))
    k = 0
    rr = np.empty(5)
    for i in range(n):
        idx = start + i
        x = ecg[i]
        # Muscle: a floor tracker of the log power (falls fast into atonia, rises slowly),
        # so REM's own silence is the reference and a nightmare's tone stands out.
        if has_emg:
            st[_RD_PM] += a_m * (m[i] * m[i] - st[_RD_PM])
            if (idx + 1) % blk == 0:
                lm = np.log(st[_RD_PM] + 1e-12)
                st[_RD_NBLK] += 1.0
                if st[_RD_NBLK] <= 1.0:
                    st[_RD_BM] = lm
                elif st[_RD_NBLK] <= warm_blk:
                    # Warm-up: follow the power both ways (its average starts from zero).
                    st[_RD_BM] += p[22] * (lm - st[_RD_BM])
                elif lm < st[_RD_BM]:
                    st[_RD_BM] += a_down * (lm - st[_RD_BM])
                elif st[_RD_IN] == 0.0:
                    st[_RD_BM] += a_up * (lm - st[_RD_BM])
                if st[_RD_NBLK] > warm_blk and lm - st[_RD_BM] > r_m:
                    st[_RD_SIGN] = idx
        if has_acc:
            if st[_RD_HAS_G] == 0.0:
                st[_RD_G] = acc[i]
                st[_RD_HAS_G] = 1.0
            st[_RD_G] += a_g * (acc[i] - st[_RD_G])
            if abs(acc[i] - st[_RD_G]) > move_g:
                st[_RD_SIGN] = idx
                st[_RD_MOVE] = idx
        # R peaks: upward crossings of half the decaying peak envelope, 0.33 s refractory
        # (the T wave is not a beat).
        st[_RD_ENV] = max(x, st[_RD_ENV] * decay)
        thr = max(thr_min, thr_ratio * st[_RD_ENV])
        above = x > thr
        beat = above and st[_RD_ABOVE] == 0.0
        st[_RD_ABOVE] = 1.0 if above else 0.0
        if beat and (st[_RD_LASTBEAT] < 0 or idx - st[_RD_LASTBEAT] >= refr):
            last = st[_RD_LASTBEAT]
            st[_RD_LASTBEAT] = idx
            if last >= 0:
                interval = idx - last
                if interval > rr_max:  # lost beats (lead-off): start the ring over
                    st[_RD_NRR] = 0.0
                else:
                    j = int(st[_RD_NRR])
                    if j < 5:
                        st[_RD_RR0 + j] = interval
                        st[_RD_NRR] = j + 1
                    else:
                        for q in range(4):
                            st[_RD_RR0 + q] = st[_RD_RR0 + q + 1]
                        st[_RD_RR4] = interval
                    if st[_RD_NRR] >= 5:
                        # The median interval: one missed or extra beat does not move it.
                        for q in range(5):
                            rr[q] = st[_RD_RR0 + q]
                        rr.sort()
                        hr = 60.0 * sf / rr[2]
                        st[_RD_HR] = hr
                        st[_RD_NBEATS] += 1.0
                        nb = st[_RD_NBEATS]
                        if nb <= 1.0:
                            st[_RD_BASE] = hr
                        high = nb > warm and hr > st[_RD_BASE] + rise
                        st[_RD_HIGH] = st[_RD_HIGH] + 1.0 if high else 0.0
                        if st[_RD_IN] == 0.0:
                            signed = need_sign == 0.0 or idx - st[_RD_SIGN] <= sgap
                            if st[_RD_HIGH] >= n_high and signed:
                                st[_RD_IN] = 1.0
                                st[_RD_ON] = idx
                                st[_RD_NEXT] = idx + tick
                                st[_RD_CALM] = 0.0
                                out[k, 0] = 0.0
                                out[k, 1] = idx
                                out[k, 2] = st[_RD_MOVE]
                                out[k, 3] = idx
                                out[k, 4] = hr - st[_RD_BASE]
                                out[k, 5] = hr
                                out[k, 6] = 0.0
                                k += 1
                            elif not high:
                                # The baseline follows the calm heart only: distress (or a
                                # run of high beats) cannot raise it.
                                a = max(1.0 / nb, 1.0 / base_n)
                                st[_RD_BASE] += a * (hr - st[_RD_BASE])
                        else:
                            calm = hr < st[_RD_BASE] + 0.5 * rise
                            st[_RD_CALM] = st[_RD_CALM] + 1.0 if calm else 0.0
                            if st[_RD_CALM] >= n_calm:
                                st[_RD_IN] = 0.0
                                st[_RD_HIGH] = 0.0
                                out[k, 0] = 1.0
                                out[k, 1] = st[_RD_ON]
                                out[k, 2] = st[_RD_MOVE]
                                out[k, 3] = idx
                                out[k, 4] = hr - st[_RD_BASE]
                                out[k, 5] = hr
                                out[k, 6] = 0.0
                                k += 1
        if st[_RD_IN] > 0.0 and idx >= st[_RD_NEXT]:
            # Distress goes on: a tick at a fixed period from its onset, while the heart is
            # still high (a heart already calming, not yet calm, skips the tick).
            st[_RD_NEXT] += tick
            if st[_RD_HR] < st[_RD_BASE] + rise:
                continue
            out[k, 0] = 2.0
            out[k, 1] = st[_RD_ON]
            out[k, 2] = st[_RD_MOVE]
            out[k, 3] = idx
            out[k, 4] = st[_RD_HR] - st[_RD_BASE]
            out[k, 5] = st[_RD_HR]
            out[k, 6] = 0.0
            k += 1
    return out[:k]


@dataclass(frozen=True)
class DistressEvent:
    """A REM-distress decision.

    Attributes
    ----------
    kind : str
        ``"onset"`` (distress criterion met), ``"tick"`` (distress still on, one per
        ``tick_s`` from the onset) or ``"end"`` (the heart has calmed).
    onset_index : int
        Decision sample of the episode's onset.
    decision_index : int
        First sample at which this decision is known.
    rise_bpm : float
        Heart rate over the running baseline at the decision (bpm).
    hr_bpm : float
        Heart rate at the decision (median of the last five R-R intervals).
    moved_index : int
        Last sample with movement at the decision (very negative: none yet).
    """

    kind: str
    onset_index: int
    decision_index: int
    rise_bpm: float
    hr_bpm: float
    moved_index: int = -(10**12)


class RemDistressDetector(_Streaming):
    """Causal REM-distress (nightmare) detector: heart rate over its baseline, with a
    muscle or movement sign.

    Heart rate comes from R peaks on the ECG (upward crossings of half the decaying peak
    envelope of the rectified 5-20 Hz QRS band, 0.33 s refractory so the T wave is not a
    beat: an inverted lead, any gain and a wandering baseline give the same beats), as the
    median of the last five R-R intervals; its baseline is a running mean over about
    ``baseline_beats`` beats that follows the calm heart only. Distress begins when ``high_beats``
    consecutive estimates lie ``rise_bpm`` or more over the baseline while the chin EMG
    (power over its REM floor by ``emg_ratio``) or the accelerometer (``move_g`` off its
    slow mean) showed a sign within the last ``sign_window_s`` -- heart rate alone
    swings by several bpm in phasic REM, the muscle sign makes it specific (NightWare
    pairs heart rate with movement for the same reason). It ends after ``calm_beats``
    consecutive estimates below baseline + ``rise_bpm / 2``. While it lasts a ``tick``
    is decided every ``tick_s`` from the onset, when the heart rate is still ``rise_bpm``
    over the baseline (a heart that is calming skips it): the clock of an escalating
    intervention.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block (the EMG floor is updated once per block).
    has_emg, has_accel : bool
        Rows given to :meth:`scan` besides the ECG (one accelerometer row: magnitude).
    rise_bpm : float
        Heart-rate rise over baseline that counts (bpm).
    high_beats, calm_beats : int
        Consecutive estimates for the onset and for the end.
    baseline_beats : int
        Memory of the heart-rate baseline.
    warmup_beats : int
        No decision before this many heart-rate estimates.
    emg_ratio : float
        EMG power over its floor that counts as a muscle sign (×).
    move_g : float
        Accelerometer deviation from its 2-s mean that counts as movement.
    sign_window_s : float
        A sign this recent qualifies the onset.
    require_sign : bool
        False: heart rate alone decides (no EMG/accelerometer on the device).
    tick_s : float
        Period of the ticks while distress lasts.
    """

    kind = "rem_distress"
    _STATE = ("_zm", "_zq", "_st")

    def __init__(
        self,
        sfreq: float = _FS,
        block: int = _BLOCK,
        has_emg: bool = True,
        has_accel: bool = True,
        rise_bpm: float = 12.0,
        high_beats: int = 3,
        calm_beats: int = 3,
        baseline_beats: int = 120,
        warmup_beats: int = 30,
        emg_ratio: float = 2.0,
        move_g: float = 0.05,
        sign_window_s: float = 20.0,
        require_sign: bool = True,
        tick_s: float = 5.0,
    ) -> None:
        super().__init__(sfreq, block)
        if rise_bpm <= 0 or emg_ratio <= 1 or tick_s <= 0:
            raise ValueError("rise_bpm and tick_s must be > 0 and emg_ratio > 1.")
        self.has_emg = bool(has_emg)
        self.has_accel = bool(has_accel)
        self.sos_emg = _bandpass((10.0, min(100.0, 0.45 * sfreq)), sfreq, 2)
        # The QRS band: R peaks are judged on its rectified output, not on the raw lead,
        # where a fixed sign and a still baseline would be assumed (a real lead read with
        # the raw form gave 165 'distress' events in 30 min of a calm 56-bpm heart).
        self.sos_qrs = _bandpass((5.0, min(20.0, 0.45 * sfreq)), sfreq, 2)
        rate_b = sfreq / block
        self._p = np.array(
            [
                math.exp(-math.log(2.0) / (3.0 * sfreq)),  # the envelope halves in 3 s
                0.5,
                50.0,  # µV of the QRS band: below this nothing is an R peak (lead-off)
                self._samples(0.33),
                self._samples(2.5),
                float(baseline_beats),
                float(warmup_beats),
                float(rise_bpm),
                float(high_beats),
                float(calm_beats),
                _alpha(1.0, sfreq),
                _alpha(10.0, rate_b),
                _alpha(300.0, rate_b),
                math.log(emg_ratio),
                float(move_g),
                _alpha(2.0, sfreq),
                self._samples(sign_window_s),
                float(self._samples(tick_s)),
                float(sfreq),
                float(block),
                10.0 * rate_b,  # 10 s before the EMG floor counts
                1.0 if require_sign else 0.0,
                _alpha(1.0, rate_b),  # the floor's warm-up average
            ]
        )
        self._zm = np.zeros((self.sos_emg.shape[0], 2))
        self._zq = np.zeros((self.sos_qrs.shape[0], 2))
        st = np.zeros(_RD_SIZE)
        st[_RD_LASTBEAT] = -1.0
        st[_RD_SIGN] = -1e18
        st[_RD_MOVE] = -1e18
        self._st = st

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: the QRS band-pass and its magnitude, the R-peak
        envelope and compare; with EMG its band-pass and EMA (the log and floor once per
        block); with an accelerometer an EMA and a compare; the state machine; per beat a
        five-value median and a division (spread over the ~250 samples of a beat, rounded
        up to a cycle)."""
        c = self.sos_qrs.shape[0] * CYCLES_PER_SECTION_SAMPLE + 1  # the QRS band, |.|
        c += CYCLES_PER_EMA + 3 * CYCLES_PER_COMPARE
        if self.has_emg:
            c += self.sos_emg.shape[0] * CYCLES_PER_SECTION_SAMPLE + CYCLES_PER_EMA
            c += -(-(CYCLES_PER_LOG + CYCLES_PER_EMA + CYCLES_PER_COMPARE) // self.block)
        if self.has_accel:
            c += CYCLES_PER_EMA + 2 * CYCLES_PER_COMPARE
        return c + CYCLES_STATE_MACHINE + 1

    @property
    def in_distress(self) -> bool:
        """Distress is on after the samples scanned so far."""
        return bool(self._st[_RD_IN] > 0)

    @property
    def last_movement_index(self) -> int:
        """Last sample with movement among those scanned (very negative: none)."""
        return max(int(self._st[_RD_MOVE]), -(10**12))

    def scan(self, x, start: int) -> list[DistressEvent]:
        """Process the next samples.

        Parameters
        ----------
        x : ndarray, shape (n_rows, n)
            ECG (µV), then the EMG (µV) if ``has_emg``, then the accelerometer (g) if
            ``has_accel``.
        start : int
            Absolute index of the first sample; calls must be contiguous.

        Returns
        -------
        list of DistressEvent
            Onsets, ticks and ends decided in these samples, in order.
        """
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        need = 1 + self.has_emg + self.has_accel
        if x.shape[0] != need:
            raise ValueError(f"Expected {need} rows (ECG[, EMG][, accel]), got {x.shape[0]}.")
        n = x.shape[1]
        self._check_start(start, n)
        if n == 0:
            return []
        qrs = np.abs(_biquads(self.sos_qrs, self._zq, np.ascontiguousarray(x[0])))
        m = (
            _biquads(self.sos_emg, self._zm, np.ascontiguousarray(x[1]))
            if self.has_emg
            else (np.empty(0))
        )
        acc = np.ascontiguousarray(x[-1]) if self.has_accel else np.empty(0)
        rows = _distress_loop(qrs, m, acc, start, self._st, self._p)
        kinds = ("onset", "end", "tick")
        return [
            DistressEvent(
                kinds[int(r[0])],
                int(r[1]),
                int(r[3]),
                float(r[4]),
                float(r[5]),
                max(int(r[2]), -(10**12)),
            )
            for r in rows
        ]

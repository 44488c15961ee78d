"""A causal online sleep stager with a one-epoch look-ahead and running normalisation.

Each 30-s epoch is pushed when its last sample has arrived (:meth:`OnlineStager.push_epoch`)
and is decided when the next epoch has arrived, i.e. at most one epoch after it ends. The
stager never sees anything later than that look-ahead epoch.

Method
------
1. **Features** per epoch (:func:`epoch_features`), all meaningful at any rate >= 50 Hz
   (nothing above 24 Hz is used, so a 50-Hz recording and a 250-Hz headband give the same
   features): a Welch spectrum (4-s Hann windows, 2-s step) of the first EEG row, its
   log total power in 0.5-24 Hz, log relative powers of six bands (slow 0.5-2, delta 2-4,
   theta 4-8, alpha 8-12, sigma 12-15, beta 15-24 Hz), spectral entropy, median and 95 %
   edge frequencies, a sigma-peak prominence (spindles), the spread of the 2-s log power
   (arousals, movement), the AASM slow-wave fraction (share of samples whose 0.5-2 Hz
   component exceeds 37.5 µV, i.e. 75 µV peak to peak) and a sigma-burst index (95th
   percentile over median of the 0.5-s sigma envelope). With an EOG: its slow (0.5-2 Hz)
   log power, its ratio to the EEG's, and the EOG/EEG slow-band correlation (eye movements
   are not seen in the EEG, slow waves are). With an EMG: its 12-24 Hz log power and
   burst index.
2. **Running normalisation** (:class:`RunningNorm`): each feature is also expressed as a
   z-score against the person and night so far. Mean and variance are those of the good
   epochs seen so far, shrunk towards a population prior (mean and spread of per-night
   statistics of generated nights) with a weight of :data:`PRIOR_EPOCHS` epochs, so the
   first minutes of a recording are normalised by physiology rather than by two epochs.
3. **Model**: a small multilayer perceptron (one hidden layer) on the raw physiological
   features, the z-scores of this epoch, of the look-ahead epoch and of the previous epoch,
   and an exponential average of past z-scores. Its posteriors, divided by the class
   priors, are the emissions of a five-state hidden Markov model (transition matrix from
   generated hypnograms); the decision for epoch ``k`` is the forward (filtered) posterior
   ``p(s_k | x_1..x_{k+1})`` — the look-ahead enters through the perceptron's input.
   Emissions are tempered (the perceptron learned on generated nights is over-confident),
   the chain starts in W (a headband is switched on at lights-off), and a REM-latency
   gate divides the prior of R by 50 until 15 min of N2/N3 have been decided (healthy
   adults enter REM after an hour of sleep; sleep-onset REM is pathological).

Bad signal
----------
An epoch flagged bad (or holding non-finite samples) still gets a stage and
``bad_signal=True``: it contributes no evidence (flat emission), does not update the
normalisation and is skipped as model context, so its
stage is the one the transition model makes most likely after the last good epoch — in
practice the stage of the last good epoch (self-transitions dominate). Before any
good epoch the stager says ``W`` (nothing is known at switch-on: act as if awake).

Model file
----------
The weights are data (``firmware/models/stager.npz``, a few tens of kB), written by
``python -m bench.train_stager`` from virtual nights only; one model per channel set
(EEG, EEG+EOG, EEG+EMG, EEG+EOG+EMG).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numba
import numpy as np
from scipy import signal

from firmware.stager import EpochDecision
from hal.base import STAGES

logger = logging.getLogger(__name__)

__all__ = [
    "EPOCH_S",
    "FEATURES_EEG",
    "FEATURES_EMG",
    "FEATURES_EOG",
    "MIN_SFREQ",
    "MODEL_PATH",
    "OnlineStager",
    "RunningNorm",
    "epoch_features",
    "feature_names",
]

#: Epoch length in seconds (AASM).
EPOCH_S = 30.0
#: Lowest sampling rate the stager works at (Hz): its features reach 24 Hz (the EMG band
#: too), which needs a Nyquist frequency above that.
MIN_SFREQ = 50.0
#: Default weights, shipped with the firmware.
MODEL_PATH = Path(__file__).resolve().parent / "models" / "stager.npz"
#: Weight of the population prior in the running normalisation, in epochs (10 min).
PRIOR_EPOCHS = 20.0
#: Decay of the exponential average of past z-scores (about 5 epochs of memory).
CONTEXT_DECAY = 0.8
_DECAY = CONTEXT_DECAY
#: N2/N3 epochs that must have been decided before R is freely allowed (15 min; the
#: shortest normal REM latency is about an hour of sleep). 0 disables the gate, e.g. for a
#: recording known to start mid-night.
REM_LATENCY_EPOCHS = 30
#: Prior factor on R while the REM-latency gate is closed.
_REM_GATE = np.array([1.0, 1.0, 1.0, 1.0, 0.02])

_BANDS = ((0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, 15.0), (15.0, 24.0))
_BAND_NAMES = ("slow", "delta", "theta", "alpha", "sigma", "beta")
_F_LO, _F_HI = 0.5, 24.0
_WIN_S, _STEP_S = 4.0, 2.0

FEATURES_EEG: tuple[str, ...] = (
    "log_total",
    *(f"rel_{b}" for b in _BAND_NAMES),
    "entropy",
    "f_median",
    "f_edge95",
    "sigma_peak",
    "power_spread",
    "swa_frac",
    "sigma_burst",
)
FEATURES_EOG: tuple[str, ...] = ("eog_slow", "eog_ratio", "eog_corr")
FEATURES_EMG: tuple[str, ...] = ("emg_log", "emg_burst")
#: Features whose absolute value means the same in every person and recording (the model
#: sees them raw as well as normalised); the others are only seen as z-scores.
_ABSOLUTE = (
    *(f"rel_{b}" for b in _BAND_NAMES),
    "entropy",
    "f_median",
    "f_edge95",
    "sigma_peak",
    "swa_frac",
    "sigma_burst",
    "log_total",
)

# ---- MCU cost model (Cortex-M4F, 64 MHz, float32, CMSIS-DSP) ---------------------------
#: Cycles per point of a real FFT (arm_rfft_fast_f32; ~40 cycles/point at 1024 points).
_CYC_FFT_POINT = 40
#: Window multiply, |X|^2 and accumulation per FFT point.
_CYC_SPEC_POINT = 8
#: One biquad section per sample (see firmware.dsp.CYCLES_PER_SECTION_SAMPLE).
_CYC_SECTION_SAMPLE = 16
#: Per-sample work outside filters (threshold count, squares for envelopes, mean removal).
_CYC_SAMPLE = 6
#: Logarithms, band sums, normalisation, sorting 60 envelope values, HMM step.
_CYC_FIXED = 60_000
#: Multiply-accumulate of the perceptron (2 cycles with loads on a float32 M4F).
_CYC_MAC = 2


def feature_names(has_eog: bool, has_emg: bool) -> tuple[str, ...]:
    """Names of the per-epoch features for a channel set, in vector order."""
    return FEATURES_EEG + (FEATURES_EOG if has_eog else ()) + (FEATURES_EMG if has_emg else ())


# ---- Feature kernels ------------------------------------------------------------------------
# Why numba: the features of one epoch used to be ~150 small NumPy calls (masks, reductions,
# four filters, a percentile) whose per-call overhead, not arithmetic, cost ~2 ms per epoch.
# The kernels below perform the same floating-point operations in the same order as those
# calls, so the features are bit-identical: every sum follows NumPy's pairwise summation
# (:func:`_sum`), a mean is that sum divided by the count, the filters are scipy's
# ``sosfilt`` recursion, the percentile is NumPy's linear interpolation. Three things stay in
# NumPy because compiled code could round differently: the FFT (pocketfft), the modulus of
# complex numbers (NumPy has its own SIMD hypot) and the array logarithms (NumPy may use SIMD
# ones); the scalar logarithms are libm's ``log10`` in both Python's ``math`` and numba.
# ``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy instead of raising.
# tests/test_staging_kernels.py holds the NumPy formulation and checks the equality.


@numba.njit(cache=True)
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover
    """NumPy's ``pairwise_sum`` of ``a[lo:lo + n]`` for ``n <= 128`` (one block: 8
    accumulators, then the rest in order; numpy/_core/src/umath/loops_utils.h.src)."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = lo + 8
    end = lo + n - n % 8
    while i < end:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for j in range(i, lo + n):
        res += a[j]
    return res


@numba.njit(cache=True)
def _sum(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover
    """``np.sum(a[lo:lo + n])`` bit for bit.

    NumPy's pairwise summation splits a run longer than 128 into halves (the first half
    rounded down to a multiple of 8) and adds their sums; a reduction starts from 0.0.
    Numba cannot cache a recursive function, so the same tree is walked with a stack.
    """
    if n <= 128:
        return 0.0 + _block_sum(a, lo, n)
    f_lo = np.empty(128, np.int64)  # frames: start, length, halves already summed
    f_n = np.empty(128, np.int64)
    f_done = np.empty(128, np.bool_)
    vals = np.empty(64)  # sums of finished halves, left before right
    f_lo[0], f_n[0], f_done[0] = lo, n, False
    nf, nv = 1, 0
    while nf > 0:
        nf -= 1
        s, m, done = f_lo[nf], f_n[nf], f_done[nf]
        if m <= 128:
            vals[nv] = _block_sum(a, s, m)
            nv += 1
        elif done:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
        else:
            m2 = m // 2
            m2 -= m2 % 8
            # Revisit this run once both halves are summed; the left half goes first.
            f_lo[nf], f_n[nf], f_done[nf] = s, m, True
            f_lo[nf + 1], f_n[nf + 1], f_done[nf + 1] = s + m2, m - m2, False
            f_lo[nf + 2], f_n[nf + 2], f_done[nf + 2] = s, m2, False
            nf += 3
    return 0.0 + vals[0]


@numba.njit(cache=True, error_model="numpy")
def _welch_segments(
    x: np.ndarray, nper: int, step: int, n_seg: int, win: np.ndarray
) -> np.ndarray:  # pragma: no cover
    """The mean-removed, windowed Welch segments of ``x`` as rows, ready for the FFT.

    A segment running past the end repeats the last sample (only when ``x`` is shorter
    than one window)."""
    last = x.shape[0] - 1
    seg = np.empty((n_seg, nper))
    for s in range(n_seg):
        row = seg[s]
        for k in range(nper):
            row[k] = x[min(s * step + k, last)]
        mean = _sum(row, 0, nper) / nper
        for k in range(nper):
            row[k] = (row[k] - mean) * win[k]
    return seg


@numba.njit(inline="always")
def _biquad2(c: tuple, st: tuple, x: float) -> tuple:  # pragma: no cover
    """One sample through two direct-form-II-transposed sections, scipy ``sosfilt``'s
    arithmetic; ``c`` = (b0, b1, b2, a1, a2) of both sections, ``st`` their states."""
    z00, z01, z10, z11 = st
    y0 = c[0] * x + z00
    z00 = c[1] * x - c[3] * y0 + z01
    z01 = c[2] * x - c[4] * y0
    y1 = c[5] * y0 + z10
    z10 = c[6] * y0 - c[8] * y1 + z11
    z11 = c[7] * y0 - c[9] * y1
    return y1, (z00, z01, z10, z11)


@numba.njit(inline="always")
def _coefs(sos: np.ndarray) -> tuple:  # pragma: no cover
    return (
        sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5],
        sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5],
    )  # fmt: skip


@numba.njit(cache=True)
def _bandpass_pair(
    sos_a: np.ndarray,
    z_a: np.ndarray,
    x_a: np.ndarray,
    sos_b: np.ndarray,
    z_b: np.ndarray,
    x_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Two 2-section cascades over equal-length inputs; states (2, 2) carried in place.

    Interleaved in one loop because each recursion is latency-bound: the second filter
    runs in the first one's pipeline bubbles (two filters cost about what one does).
    """
    n = x_a.shape[0]
    y_a = np.empty(n)
    y_b = np.empty(n)
    ca, cb = _coefs(sos_a), _coefs(sos_b)
    sa = (z_a[0, 0], z_a[0, 1], z_a[1, 0], z_a[1, 1])
    sb = (z_b[0, 0], z_b[0, 1], z_b[1, 0], z_b[1, 1])
    for i in range(n):
        y_a[i], sa = _biquad2(ca, sa, x_a[i])
        y_b[i], sb = _biquad2(cb, sb, x_b[i])
    z_a[0, 0], z_a[0, 1], z_a[1, 0], z_a[1, 1] = sa
    z_b[0, 0], z_b[0, 1], z_b[1, 0], z_b[1, 1] = sb
    return y_a, y_b


@numba.njit(cache=True)
def _bandpass(sos: np.ndarray, z: np.ndarray, x: np.ndarray) -> np.ndarray:  # pragma: no cover
    """One 2-section cascade (see :func:`_bandpass_pair`); state (2, 2) carried in place."""
    n = x.shape[0]
    y = np.empty(n)
    c = _coefs(sos)
    st = (z[0, 0], z[0, 1], z[1, 0], z[1, 1])
    for i in range(n):
        y[i], st = _biquad2(c, st, x[i])
    z[0, 0], z[0, 1], z[1, 0], z[1, 1] = st
    return y


@numba.njit(cache=True, error_model="numpy")
def _envelope_ratio(y: np.ndarray, n_win: int) -> float:  # pragma: no cover
    """95th percentile over median of the ``n_win``-sample RMS envelope of ``y``.

    ``np.percentile(rms, 95)`` (method "linear": the order statistics around
    ``(m - 1) * 0.95`` and NumPy's two-sided lerp) over ``np.median(rms)`` (mean of the
    middle pair); NaN when an RMS value is NaN, as NumPy gives. Needs ``m >= 4`` windows.
    """
    m = y.shape[0] // n_win
    sq = np.empty(n_win)
    rms = np.empty(m)
    for k in range(m):
        for i in range(n_win):
            v = y[k * n_win + i]
            sq[i] = v * v
        rms[k] = math.sqrt(_sum(sq, 0, n_win) / n_win) + 1e-9
        if math.isnan(rms[k]):
            return np.nan  # NumPy sorts NaN last, and both statistics are then NaN
    # Insertion sort: m is about 60 values, and numba's np.sort would add seconds of
    # compilation on a fresh machine for nothing (sorted values are the same either way).
    s = rms
    for k in range(1, m):
        v = s[k]
        j = k - 1
        while j >= 0 and s[j] > v:
            s[j + 1] = s[j]
            j -= 1
        s[j + 1] = v
    virtual = (m - 1) * 0.95
    lo = math.floor(virtual)
    a = s[int(lo)]
    b = s[min(int(lo) + 1, m - 1)]
    t = virtual - lo
    diff = b - a
    p95 = b - diff * (1.0 - t) if t >= 0.5 else a + diff * t
    med = (s[m // 2 - 1] + s[m // 2]) / 2.0 if m % 2 == 0 else s[m // 2]
    return p95 / med


@numba.njit(cache=True)
def _lower_bound(a: np.ndarray, v: float) -> int:  # pragma: no cover
    """``np.searchsorted(a, v)`` (side "left"): NumPy's binary search, whose NaN-aware
    comparison is plain ``<`` for a non-NaN ``v``."""
    lo, hi = 0, a.shape[0]
    while lo < hi:
        mid = lo + ((hi - lo) >> 1)
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, error_model="numpy")
def _spectral_features(
    mag: np.ndarray,
    scale: float,
    df: float,
    i0: int,
    fs: np.ndarray,
    bands: np.ndarray,
    out: np.ndarray,
    l10_in: np.ndarray,
    pn: np.ndarray,
    ln_in: np.ndarray,
) -> None:  # pragma: no cover
    """The spectral features up to the array logarithms, from the FFT moduli ``mag``.

    Fills ``out[0:7]`` (log total power, log relative band powers), ``out[8:10]`` (median
    and 95 % edge frequencies), the normalised spectrum ``pn`` over ``fs`` (the 0.5-24 Hz
    bins from index ``i0``), ``ln_in = pn + 1e-20`` (entropy) and ``l10_in``: the bins of
    the three sigma-peak bands plus 1e-12, then each segment's total power. ``bands``
    holds (start, stop) rows into ``fs``: six power bands, then three sigma-peak bands.
    """
    n_seg, n_f = mag.shape
    n_p = fs.shape[0]
    spec = np.empty((n_seg, n_f))
    for s in range(n_seg):
        for j in range(n_f):
            v = mag[s, j] * mag[s, j] / scale
            if 0 < j < n_f - 1:
                v *= 2.0  # one-sided spectrum
            spec[s, j] = v
    # Mean over segments, accumulated row after row as NumPy reduces axis 0.
    p = np.empty(n_p)
    for j in range(n_p):
        acc = 0.0
        for s in range(n_seg):
            acc += spec[s, i0 + j]
        p[j] = acc / n_seg
    p_sum = _sum(p, 0, n_p)
    total = p_sum * df + 1e-12
    out[0] = math.log10(total)
    for k in range(6):
        lo, hi = bands[k, 0], bands[k, 1]
        out[1 + k] = math.log10(_sum(p, lo, hi - lo) * df / total + 1e-9)
    cum = np.empty(n_p)
    acc = 0.0
    for j in range(n_p):
        pn[j] = p[j] / p_sum
        ln_in[j] = pn[j] + 1e-20
        acc = pn[j] if j == 0 else acc + pn[j]
        cum[j] = acc
    i_med = _lower_bound(cum, 0.5)
    if i_med >= n_p:
        raise IndexError("median frequency beyond the band (NumPy indexing would fail too)")
    out[8] = fs[i_med]
    out[9] = fs[min(_lower_bound(cum, 0.95), n_p - 1)]
    pos = 0
    for k in range(6, 9):
        for j in range(bands[k, 0], bands[k, 1]):
            l10_in[pos] = p[j] + 1e-12
            pos += 1
    for s in range(n_seg):
        # Summed in order, not pairwise: NumPy's ``spec[:, mask]`` is a Fortran-ordered
        # copy, so its ``sum(axis=1)`` adds column after column.
        acc = 0.0
        for j in range(i0, i0 + n_p):
            acc += spec[s, j]
        l10_in[pos] = acc * df + 1e-12
        pos += 1


@numba.njit(cache=True)
def _share_above(y: np.ndarray, thr: float) -> float:  # pragma: no cover
    """``np.mean(np.abs(y) > thr)`` (an exact count over the length)."""
    n = 0
    for v in y:
        if abs(v) > thr:
            n += 1
    return n / y.shape[0]


@numba.njit(cache=True)
def _all_finite(a: np.ndarray) -> bool:  # pragma: no cover
    """``np.all(np.isfinite(a))`` for a contiguous 1-D float64 ``a``.

    A value is inf or NaN exactly when its exponent bits are all ones; OR-ing that test
    over the integers vectorises, unlike a float test with an early exit (5x faster than
    NumPy's mask and ``all``).
    """
    exp = np.uint64(0x7FF0000000000000)
    bad = np.uint64(0)
    bits = a.view(np.uint64)
    for i in range(bits.shape[0]):
        bad |= np.uint64((bits[i] & exp) == exp)
    return bad == 0


@numba.njit(cache=True, error_model="numpy")
def _mean_square(y: np.ndarray) -> float:  # pragma: no cover
    """``np.mean(y**2)`` bit for bit."""
    sq = np.empty(y.shape[0])
    for i in range(y.shape[0]):
        sq[i] = y[i] * y[i]
    return _sum(sq, 0, sq.shape[0]) / sq.shape[0]


@numba.njit(cache=True, error_model="numpy")
def _eog_stats(
    eslow: np.ndarray, slow: np.ndarray
) -> tuple[float, float, float, float, np.ndarray]:  # pragma: no cover
    """``np.mean(eslow**2)``, ``np.mean(slow**2)``, ``np.std`` of both, and both rows
    minus their means (what ``np.corrcoef(eslow, slow)`` multiplies)."""
    n = slow.shape[0]
    xc = np.empty((2, n))
    sq = np.empty(n)
    ms = np.empty(2)
    sd = np.empty(2)
    for r in range(2):
        y = eslow if r == 0 else slow
        for i in range(n):
            sq[i] = y[i] * y[i]
        ms[r] = _sum(sq, 0, n) / n
        mean = _sum(y, 0, n) / n
        for i in range(n):
            xc[r, i] = y[i] - mean
            sq[i] = xc[r, i] * xc[r, i]
        sd[r] = math.sqrt(_sum(sq, 0, n) / n)
    return ms[0], ms[1], sd[0], sd[1], xc


@numba.njit(cache=True, error_model="numpy")
def _finish_features(
    l10: np.ndarray, ln: np.ndarray, pn: np.ndarray, bands: np.ndarray, log_n: float
) -> tuple[float, float, float]:  # pragma: no cover
    """Entropy, sigma-peak prominence and power spread from the array logarithms."""
    n_p = pn.shape[0]
    t = np.empty(n_p)
    for j in range(n_p):
        t[j] = pn[j] * ln[j]
    entropy = -_sum(t, 0, n_p) / log_n
    pos = 0
    means = np.empty(3)
    for k in range(3):
        cnt = bands[6 + k, 1] - bands[6 + k, 0]
        means[k] = _sum(l10, pos, cnt) / cnt
        pos += cnt
    peak = means[0] - 0.5 * (means[1] + means[2])
    n_seg = l10.shape[0] - pos
    mean = _sum(l10, pos, n_seg) / n_seg
    sq = np.empty(n_seg)
    for s in range(n_seg):
        d = l10[pos + s] - mean
        sq[s] = d * d
    spread = math.sqrt(_sum(sq, 0, n_seg) / n_seg)
    return entropy, peak, spread


class _Plan:
    """Constants of the features at one rate and epoch length, computed once.

    The Hann window and its energy, the 0.5-24 Hz bins and the band index ranges, computed
    with the expressions the per-epoch code used, so they are the same numbers.
    """

    def __init__(self, sfreq: float, n: int) -> None:
        self.nper = round(_WIN_S * sfreq)
        self.step = round(_STEP_S * sfreq)
        self.n_seg = max(1, 1 + (n - self.nper) // self.step)
        self.win = np.hanning(self.nper)
        self.scale = float(sfreq * np.sum(self.win**2))
        freqs = np.fft.rfftfreq(self.nper, 1.0 / sfreq)
        self.df = float(freqs[1] - freqs[0])
        sel = np.flatnonzero((freqs >= _F_LO) & (freqs < _F_HI))
        self.i0 = int(sel[0])
        self.fs = freqs[sel]
        rows = []
        for lo, hi in (*_BANDS, (12.0, 15.0), (9.0, 11.0), (16.0, 19.0)):
            idx = np.flatnonzero((self.fs >= lo) & (self.fs < hi))
            # Masks on increasing frequencies are ranges (an empty band is (0, 0)).
            rows.append((idx[0], idx[-1] + 1) if idx.size else (0, 0))
        self.bands = np.array(rows, dtype=np.int64)
        self.n_l10 = int(np.sum(np.diff(self.bands[6:], axis=1))) + self.n_seg
        self.log_n = math.log(self.fs.size)
        self.env_n = max(1, round(0.5 * sfreq))
        for a in (self.win, self.fs, self.bands):
            a.setflags(write=False)  # shared between stagers


@functools.lru_cache(maxsize=16)
def _plan(sfreq: float, n: int) -> _Plan:
    return _Plan(sfreq, n)


@functools.lru_cache(maxsize=16)
def _designs(sfreq: float) -> tuple[np.ndarray, ...]:
    """The three band-passes at ``sfreq`` and their unit-step steady states."""
    nyq = sfreq / 2.0
    slow = signal.butter(2, [0.5, 2.0], "bandpass", fs=sfreq, output="sos")
    sigma = signal.butter(2, [12.0, min(15.0, 0.9 * nyq)], "bandpass", fs=sfreq, output="sos")
    emg = signal.butter(2, [12.0, min(24.0, 0.9 * nyq)], "bandpass", fs=sfreq, output="sos")
    # Order-2 band-passes are two sections each, the shape the compiled cascades take.
    assert all(s.shape == (2, 6) for s in (slow, sigma, emg))
    out = (slow, sigma, emg, *(signal.sosfilt_zi(s) for s in (slow, sigma, emg)))
    for a in out:
        a.setflags(write=False)
    return out


class _Filters:
    """Band-pass filters run continuously across epochs (state carried, as on the device).

    The designs are shared per rate (read-only); the states (2 sections x 2) are this
    object's and are advanced in place by :func:`_bandpass`.
    """

    def __init__(self, sfreq: float, has_eog: bool) -> None:
        (self.sos_slow, self.sos_sigma, self.sos_emg, *zi) = _designs(float(sfreq))
        self._zi = dict(zip(("z_slow", "z_sigma", "z_emg"), zi, strict=True))
        self._zi["z_eog"] = self._zi["z_slow"]
        self.has_eog = has_eog
        self.reset()

    def reset(self) -> None:
        """Forget the filter state (after bad signal, whose samples would ring on)."""
        self.z_slow = np.zeros((self.sos_slow.shape[0], 2))
        self.z_sigma = np.zeros((self.sos_sigma.shape[0], 2))
        self.z_eog = np.zeros((self.sos_slow.shape[0], 2))
        self.z_emg = np.zeros((self.sos_emg.shape[0], 2))
        self.primed = False

    def prime(self, name: str, x0: float) -> None:
        """Start filter ``name`` at steady state for its first value ``x0`` (no step)."""
        if not self.primed:
            getattr(self, name)[...] = self._zi[name] * x0


_NO_SIGNAL = np.empty(0)


def epoch_features(
    eeg: np.ndarray,
    eog: np.ndarray | None,
    emg: np.ndarray | None,
    sfreq: float,
    filters: _Filters | None = None,
) -> np.ndarray:
    """Features of one 30-s epoch.

    Parameters
    ----------
    eeg : ndarray, shape (n,) or (n_rows, n)
        EEG in µV; the first row is used (a central derivation is expected).
    eog, emg : ndarray, shape (n,), or None
        EOG and chin EMG in µV, when the board has them.
    sfreq : float
        Sampling rate in Hz (at least 50).
    filters : _Filters or None
        Filter state carried from the previous epoch; None filters the epoch alone.

    Returns
    -------
    ndarray
        Values in the order of :func:`feature_names`.
    """
    x = np.ascontiguousarray(np.atleast_2d(np.asarray(eeg, dtype=np.float64))[0])
    if filters is None:
        filters = _Filters(sfreq, eog is not None)
    plan = _plan(float(sfreq), x.size)
    e = None if eog is None else np.ascontiguousarray(eog, dtype=np.float64)
    if e is not None and e.size != x.size:
        raise ValueError(f"EOG has {e.size} samples, the EEG {x.size}")
    m = None if emg is None else np.ascontiguousarray(emg, dtype=np.float64)
    out = np.empty(len(FEATURES_EEG) + 3 * (e is not None) + 2 * (m is not None))

    # Welch spectrum: segments in a kernel, the FFT and |X| in NumPy (see above).
    seg = _welch_segments(x, plan.nper, plan.step, plan.n_seg, plan.win)
    mag = np.abs(np.fft.rfft(seg, axis=1))
    l10_in = np.empty(plan.n_l10 + 1 + (m is not None))
    pn = np.empty(plan.fs.size)
    ln_in = np.empty(plan.fs.size)
    _spectral_features(
        mag, plan.scale, plan.df, plan.i0, plan.fs, plan.bands, out, l10_in, pn, ln_in
    )

    # Band-pass filters, state carried across epochs.
    filters.prime("z_slow", x[0])
    filters.prime("z_sigma", x[0])
    slow, sigma = _bandpass_pair(
        filters.sos_slow, filters.z_slow, x, filters.sos_sigma, filters.z_sigma, x
    )
    eslow = m_band = _NO_SIGNAL
    if e is not None:
        filters.prime("z_eog", e[0])
    if m is not None:
        filters.prime("z_emg", m[0])
    if e is not None and m is not None and e.size == m.size:
        eslow, m_band = _bandpass_pair(
            filters.sos_slow, filters.z_eog, e, filters.sos_emg, filters.z_emg, m
        )
    else:
        if e is not None:
            eslow = _bandpass(filters.sos_slow, filters.z_eog, e)
        if m is not None:
            m_band = _bandpass(filters.sos_emg, filters.z_emg, m)
    filters.primed = True
    out[12] = _share_above(slow, 37.5)
    k = plan.n_l10
    # Burst indexes: their ratios join the array logarithms; below four envelope windows
    # the index is 0 (the placeholder 1.0 only keeps the logarithm quiet).
    bursts = [sigma] if m is None else [sigma, m_band]
    has_env = [y.size // plan.env_n >= 4 for y in bursts]
    for j, (y, ok) in enumerate(zip(bursts, has_env, strict=True)):
        l10_in[k + j] = _envelope_ratio(y, plan.env_n) if ok else 1.0

    # The array logarithms in NumPy (see above), then the features that need them.
    l10 = np.log10(l10_in)
    out[7], out[10], out[11] = _finish_features(l10[:k], np.log(ln_in), pn, plan.bands, plan.log_n)
    out[13] = l10[k] if has_env[0] else 0.0
    i = len(FEATURES_EEG)
    if e is not None:
        ms_e, ms_s, sd_e, sd_s, xc = _eog_stats(eslow, slow)
        pe = ms_e + 1e-9
        out[i] = math.log10(pe)
        out[i + 1] = math.log10(pe / (ms_s + 1e-9))
        corr = 0.0
        if sd_e > 0 and sd_s > 0:
            # np.corrcoef(eslow, slow)[0, 1]: the same BLAS product of the centred rows,
            # scaled by 1 / (n - 1), divided by both standard deviations, clipped to ±1.
            c = np.dot(xc, xc.T)
            f = 1 / (slow.size - 1)
            r = float(c[0, 1]) * f / math.sqrt(float(c[0, 0]) * f) / math.sqrt(float(c[1, 1]) * f)
            corr = min(max(r, -1.0), 1.0)  # NaN stays NaN, as with np.clip
        out[i + 2] = corr
        i += 3
    if m is not None:
        out[i] = math.log10(_mean_square(m_band) + 1e-9)
        out[i + 1] = l10[k + 1] if has_env[1] else 0.0
    return out


class RunningNorm:
    """Running z-scores shrunk towards a population prior.

    Parameters
    ----------
    prior_mean, prior_var : ndarray
        Population mean and variance of each feature within a night.
    prior_epochs : float
        Weight of the prior, in epochs.

    Notes
    -----
    After ``n`` good epochs with sum ``S`` and sum of squares ``Q`` the mean is
    ``(w m0 + S) / (w + n)`` and the second moment ``(w (v0 + m0²) + Q) / (w + n)``, the
    conjugate update of a normal model with ``w`` pseudo-epochs drawn from the prior. Two
    sums per feature: O(1) memory and time per epoch.
    """

    def __init__(self, prior_mean: np.ndarray, prior_var: np.ndarray, prior_epochs: float) -> None:
        self.m0 = np.asarray(prior_mean, dtype=np.float64)
        self.v0 = np.asarray(prior_var, dtype=np.float64)
        self.w = float(prior_epochs)
        self.n = 0
        self.s = np.zeros_like(self.m0)
        self.q = np.zeros_like(self.m0)
        # The prior's terms, and the mean and spread until the next update (the stager
        # asks for the z-scores of two epochs between updates).
        self._w_m0 = self.w * self.m0
        self._w_q0 = self.w * (self.v0 + self.m0**2)
        self._var_floor = 1e-3 * self.v0 + 1e-12
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, x: np.ndarray) -> None:
        """Add one good epoch's features."""
        self.n += 1
        self.s += x
        self.q += x * x
        self._stats = None

    def z(self, x: np.ndarray) -> np.ndarray:
        """z-scores of ``x`` against the night so far and the prior."""
        if self._stats is None:
            d = self.w + self.n
            mean = (self._w_m0 + self.s) / d
            var = (self._w_q0 + self.q) / d - mean**2
            self._stats = (mean, np.sqrt(np.maximum(var, self._var_floor)))
        mean, sd = self._stats
        return (x - mean) / sd


class _Model:
    """The per-channel-set perceptron and HMM parameters loaded from the model file."""

    def __init__(self, data: dict[str, np.ndarray], key: str) -> None:
        self.prior_mean = data[f"{key}/prior_mean"]
        self.prior_var = data[f"{key}/prior_var"]
        self.in_mean = data[f"{key}/in_mean"]
        self.in_scale = data[f"{key}/in_scale"]
        self.w1 = data[f"{key}/w1"]
        self.b1 = data[f"{key}/b1"]
        self.w2 = data[f"{key}/w2"]
        self.b2 = data[f"{key}/b2"]
        self.class_prior = data.get(f"{key}/row_prior", data["class_prior"])
        self.trans = data["trans"]
        self.start = data["start"]
        self.temperature = float(data.get("temperature", 1.0))

    def n_macs(self) -> int:
        return int(self.w1.size + self.w2.size)

    def proba(self, row: np.ndarray) -> np.ndarray:
        h = np.maximum((row - self.in_mean) / self.in_scale @ self.w1 + self.b1, 0.0)
        logit = h @ self.w2 + self.b2
        e = np.exp(logit - logit.max())
        return e / e.sum()

    def emission(self, row: np.ndarray) -> np.ndarray:
        """Scaled likelihood p(x | s) ∝ p(s | x) / p(s), normalised."""
        # Tempered: the perceptron learned on clean generated nights is over-confident, and
        # a temperature below 1 lets the transition model weigh in on real recordings.
        p = (self.proba(row) / self.class_prior) ** self.temperature
        return p / p.sum()


def _load_model(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def design_row(
    raw: np.ndarray,
    z_prev: np.ndarray,
    z_now: np.ndarray,
    z_next: np.ndarray,
    z_avg: np.ndarray,
    absolute_idx: np.ndarray,
) -> np.ndarray:
    """The model input of one epoch (shared by the stager and the training script)."""
    return np.concatenate([raw[absolute_idx], z_now, z_next, z_prev, z_avg])


class OnlineStager:
    """Causal 30-s sleep stager deciding each epoch one epoch after it ends.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the pushed epochs in Hz (>= 50).
    has_eog, has_emg : bool
        Whether EOG and chin EMG will be pushed (EEG alone works).
    model : str, Path, dict or None
        Model file (``.npz``) or its loaded arrays; default :data:`MODEL_PATH`.
    prior_epochs : float
        Weight of the population prior in the running normalisation, in epochs.
    record : bool
        Keep every model input row in :attr:`rows` (for training and inspection).
    rem_latency : int
        N2/N3 epochs to be decided before R is allowed without overwhelming evidence
        (:data:`REM_LATENCY_EPOCHS`; 0 for recordings that start mid-night).

    Examples
    --------
    >>> import numpy as np
    >>> st = OnlineStager(250.0, has_eog=False, has_emg=False)
    >>> rng = np.random.default_rng(0)
    >>> st.push_epoch(rng.normal(0, 20, 7500), None, None, bad=False)
    []
    >>> [d.epoch for d in st.push_epoch(rng.normal(0, 20, 7500), None, None, bad=False)]
    [0]
    >>> [d.epoch for d in st.flush()]
    [1]
    """

    def __init__(
        self,
        sfreq: float,
        has_eog: bool,
        has_emg: bool,
        model: str | Path | dict[str, np.ndarray] | None = None,
        prior_epochs: float = PRIOR_EPOCHS,
        record: bool = False,
        rem_latency: int = REM_LATENCY_EPOCHS,
    ) -> None:
        if sfreq < MIN_SFREQ:
            raise ValueError(
                f"sfreq must be at least {MIN_SFREQ:g} Hz (features use 0.5-24 Hz), got {sfreq}"
            )
        self.sfreq = float(sfreq)
        self.n_epoch = round(EPOCH_S * self.sfreq)
        self.has_eog = bool(has_eog)
        self.has_emg = bool(has_emg)
        self.names = feature_names(self.has_eog, self.has_emg)
        self.key = "eeg" + ("+eog" if self.has_eog else "") + ("+emg" if self.has_emg else "")
        data = model if isinstance(model, dict) else _load_model(Path(model or MODEL_PATH))
        self.model = _Model(data, self.key) if f"{self.key}/w1" in data else None
        if self.model is None and not record:
            raise ValueError(f"The model file has no weights for channel set {self.key!r}.")
        prior_mean = data.get(f"{self.key}/prior_mean", np.zeros(len(self.names)))
        prior_var = data.get(f"{self.key}/prior_var", np.ones(len(self.names)))
        self.norm = RunningNorm(prior_mean, prior_var, prior_epochs)
        self.absolute_idx = np.array([i for i, n in enumerate(self.names) if n in _ABSOLUTE])
        self.filters = _Filters(self.sfreq, self.has_eog)
        self.record = record
        self.rem_latency = int(rem_latency)
        self.rows: list[tuple[int, np.ndarray]] = []
        self._n_pushed = 0
        self._n_good = 0
        self._n_nrem = 0
        # The epoch held until its look-ahead arrives: (index, raw features, bad).
        self._held: tuple[int, np.ndarray, bool] | None = None
        self._z_prev: np.ndarray | None = None
        self._z_avg: np.ndarray | None = None
        self._alpha: np.ndarray | None = None  # HMM filtered distribution of the last epoch
        self._uniform = np.full(len(STAGES), 1.0 / len(STAGES))

    # ------------------------------------------------------------------------ cost
    def cycles_per_epoch(self) -> int:
        """Declared MCU cost of one epoch (features, normalisation, model, HMM).

        Assumptions: Cortex-M4F at 64 MHz, float32 CMSIS-DSP; 14 Welch segments of a
        1024-point real FFT per spectral channel at 250 Hz (the FFT length is the next power
        of two of 4 s of samples), one 2nd-order band-pass (2 sections) per filtered signal,
        a perceptron of ``n_in x n_hidden + n_hidden x 5`` multiply-accumulates and a
        5-state HMM step. At 250 Hz with EEG alone this is about 1.3 M cycles (20 ms of CPU
        per 30 s, 0.07 % load); with EOG and EMG about 1.8 M.
        """
        n = self.n_epoch
        nfft = 1 << (round(_WIN_S * self.sfreq) - 1).bit_length()
        n_seg = 1 + (n - round(_WIN_S * self.sfreq)) // round(_STEP_S * self.sfreq)
        spectral = n_seg * nfft * (_CYC_FFT_POINT + _CYC_SPEC_POINT)
        n_filters = 2 + (1 if self.has_eog else 0) + (1 if self.has_emg else 0)
        filt = n_filters * 2 * _CYC_SECTION_SAMPLE * n
        per_sample = (1 + self.has_eog + self.has_emg) * _CYC_SAMPLE * n
        macs = self.model.n_macs() if self.model is not None else 0
        return int(spectral + filt + per_sample + _CYC_FIXED + _CYC_MAC * macs)

    # ------------------------------------------------------------------------ work
    def push_epoch(
        self,
        eeg: np.ndarray,
        eog: np.ndarray | None,
        emg: np.ndarray | None,
        bad: bool,
    ) -> list[EpochDecision]:
        """Push one complete epoch; return the decisions released now.

        Parameters
        ----------
        eeg : ndarray, shape (n,) or (n_rows, n)
            EEG of the epoch in µV (the first row is staged).
        eog, emg : ndarray or None
            EOG and EMG of the epoch in µV (ignored when the stager was built without them).
        bad : bool
            The signal of this epoch was mostly bad (quality monitor).

        Returns
        -------
        list of EpochDecision
            The decision of the previous epoch (empty on the first push).
        """
        x = np.atleast_2d(np.asarray(eeg, dtype=np.float64))
        eog_a = np.asarray(eog, dtype=np.float64) if self.has_eog and eog is not None else None
        emg_a = np.asarray(emg, dtype=np.float64) if self.has_emg and emg is not None else None
        missing = (self.has_eog and eog_a is None) or (self.has_emg and emg_a is None)
        finite = all(
            a is None or _all_finite(np.ascontiguousarray(a)) for a in (x[0], eog_a, emg_a)
        )
        is_bad = bool(bad) or missing or not finite or x.shape[1] < round(_WIN_S * self.sfreq)
        if is_bad:
            self.filters.reset()
            raw = np.full(len(self.names), np.nan)
        else:
            raw = epoch_features(x[0], eog_a, emg_a, self.sfreq, self.filters)
        return self.push_features(raw, is_bad)

    def push_features(self, raw: np.ndarray, bad: bool) -> list[EpochDecision]:
        """Push one epoch's feature vector (what :meth:`push_epoch` does after extraction).

        Used by the training script on precomputed features; ``raw`` follows
        :func:`feature_names` and is ignored when ``bad``.
        """
        k = self._n_pushed
        self._n_pushed += 1
        if not bad:
            self.norm.update(raw)
        out: list[EpochDecision] = []
        if self._held is not None:
            out.append(self._decide(next_raw=raw, next_bad=bad))
        self._held = (k, raw, bad)
        return out

    def flush(self) -> list[EpochDecision]:
        """Decide the held epoch at the end of the recording (no look-ahead left)."""
        if self._held is None:
            return []
        return [self._decide(next_raw=None, next_bad=True)]

    # ------------------------------------------------------------------------ internals
    def _decide(self, next_raw: np.ndarray | None, next_bad: bool) -> EpochDecision:
        assert self._held is not None
        k, raw, bad = self._held
        self._held = None
        if bad:
            # No evidence from this epoch: the HMM only propagates.
            emis = self._uniform
        else:
            z_now = self.norm.z(raw)
            z_next = z_now if next_raw is None or next_bad else self.norm.z(next_raw)
            z_prev = z_now if self._z_prev is None else self._z_prev
            z_avg = z_now if self._z_avg is None else self._z_avg
            row = design_row(raw, z_prev, z_now, z_next, z_avg, self.absolute_idx)
            if self.record:
                self.rows.append((k, row))
            emis = self._uniform if self.model is None else self.model.emission(row)
            self._z_prev = z_now
            self._z_avg = (
                z_now if self._z_avg is None else _DECAY * self._z_avg + (1 - _DECAY) * z_now
            )
            self._n_good += 1
        if self.model is None:
            return EpochDecision(k, "W", bad, {})
        pred = self.model.start if self._alpha is None else self._alpha @ self.model.trans
        if self._n_nrem < self.rem_latency:
            # REM latency: healthy sleepers enter REM after 60-90 min of NREM sleep, so
            # before some NREM has been seen, R needs overwhelming evidence.
            pred = pred * _REM_GATE
        alpha = pred * emis
        self._alpha = alpha / alpha.sum()
        # Before any good epoch nothing is known: act as if awake.
        stage = STAGES[int(np.argmax(self._alpha))] if self._n_good else "W"
        if stage in ("N2", "N3"):
            self._n_nrem += 1
        feats = {"p_" + s: round(float(v), 4) for s, v in zip(STAGES, self._alpha, strict=True)}
        if not bad:
            feats.update({n: float(v) for n, v in zip(self.names, raw, strict=True)})
        return EpochDecision(k, stage, bad, feats)


def score(truth: Sequence[str], pred: Sequence[str]) -> dict[str, object]:
    """Accuracy, Cohen's kappa and the confusion matrix (rows truth, columns prediction).

    Epochs whose truth is not one of :data:`hal.base.STAGES` are skipped.
    """
    idx = {s: i for i, s in enumerate(STAGES)}
    cm = np.zeros((5, 5), dtype=int)
    for t, p in zip(truth, pred, strict=True):
        if t in idx and p in idx:
            cm[idx[t], idx[p]] += 1
    n = cm.sum()
    if n == 0:
        return {"n": 0, "accuracy": float("nan"), "kappa": float("nan"), "confusion": cm.tolist()}
    po = np.trace(cm) / n
    pe = float(np.sum(cm.sum(axis=0) * cm.sum(axis=1))) / n**2
    kappa = (po - pe) / (1 - pe) if pe < 1 else 1.0
    return {"n": int(n), "accuracy": float(po), "kappa": float(kappa), "confusion": cm.tolist()}

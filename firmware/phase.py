"""Causal slow-oscillation phase estimators for phase-locked stimulation.

Three estimators share one streaming API (:class:`PhaseEstimator`): ``scan`` takes the
next samples of one EEG channel and returns the stimulation :class:`Candidate` found in
them; ``snapshot``/``restore`` copy the whole state so the application can rescan a
prefix after it cut a chunk at a decision. Scanning in pieces of any size gives exactly
the candidates of one whole scan: every per-sample or per-block computation runs in a
fixed order inside a compiled loop, whatever the piece boundaries.

* :class:`EchtEstimator` -- the endpoint-corrected Hilbert transform (Schreglmann et al.
  2021, Nat Commun 12:363). For each DMA block, the last ``window_s`` of raw EEG is
  transformed: FFT, one-sided spectrum (negative frequencies zeroed, positive doubled),
  multiplied by the frequency response of a causal band-pass Butterworth filter (the
  *endpoint correction*: the causal response makes the end of the window depend on the
  most recent samples, where a plain Hilbert transform is worst), inverse FFT; the last
  sample of the analytic signal gives phase and amplitude. Every step is linear and only
  one output sample is used, so the whole transform equals one complex dot product of the
  window with a fixed kernel (computed once from the same FFT recipe; the test checks it
  against the FFT form). The device can run either form; the dot product is cheaper.
* :class:`PllEstimator` -- a phase-locked loop (Santostasi et al. 2016, J Neurosci
  Methods 259:101-114; Portiloop, Valenchon et al. 2022, has an open one): a numerically
  controlled oscillator is locked to the band-passed EEG by a proportional-integral loop.
  The phase detector is a quadrature one (the band-passed signal and its derivative give
  the in-phase and quadrature parts), so it has no double-frequency ripple.
* :class:`NgoThreshold` -- the reference of Ngo et al. 2013 (Neuron 78:545-553): the
  band-passed EEG crosses below a fixed threshold (-80 µV) and the stimulus is placed a
  fixed 500 ms later.

The ECHT and the PLL share the decision rule (:func:`_decide`), evaluated once per DMA
block as on the device: a real down-state arms it (the estimated signal reaches
``threshold_uv`` in its negative half-wave), and in the following down-to-up transition,
once the estimated phase reaches ``decision_deg`` (default -20°, shortly before the
positive peak at 0°), it predicts the peak from the adaptive frequency estimate: the phase
advanced since the signal entered its negative half-wave (90°) divided by the time that
took (an average instantaneous frequency over the last ~0.7 cycle). Deciding late keeps
the prediction horizon short (30-80 ms), which is what makes the prediction accurate; the
application's timer and the 15-ms audio latency still fit in it for most waves at 250 Hz
(the application drops the candidates whose timer would be in the past).

Why numba: the PLL and the decision rule are inherently sequential (every sample or block
depends on the previous state), and a Python loop over an 8-h night (7.2 M samples, 0.9 M
blocks) takes tens of seconds; compiled with ``numba.njit`` they take well under a second
and keep the exact order of operations regardless of how the stream is cut.

Phase convention everywhere: 0° = slow-oscillation positive peak (up-phase), ±180° = the
trough (down-state), -90° = the rising zero crossing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numba
import numpy as np
from scipy import signal

from firmware.dsp import copy_state

logger = logging.getLogger(__name__)

__all__ = [
    "Candidate",
    "EchtEstimator",
    "NgoThreshold",
    "PhaseEstimator",
    "PllEstimator",
    "echt_kernel",
    "make_estimator",
]

#: Device sampling rate and DMA block the defaults are written for.
_FS = 250.0
_BLOCK = 8

# --- MCU cost model (Cortex-M4F at 64 MHz, float32, CMSIS-DSP) ------------------------------
# Assumptions: a float multiply-accumulate with its two loads costs ~3 cycles in a CMSIS
# dot-product loop (arm_dot_prod_f32 measures 2.5-3.5 cycles/tap); an N-point real FFT
# (arm_rfft_fast_f32) ~40 N cycles; atan2f/sinf/cosf ~100 cycles each (CMSIS fast versions
# ~50-70); a biquad section 16 cycles per sample (as firmware.dsp); the decision rule ~150
# cycles per block (a few compares, one division, the prediction).
CYCLES_PER_MAC = 3
CYCLES_PER_TRIG = 100
CYCLES_PER_SECTION_SAMPLE = 16
DECISION_CYCLES_PER_BLOCK = 150


@dataclass(frozen=True)
class Candidate:
    """A moment to stimulate, as an estimator found it.

    Attributes
    ----------
    decision_index : int
        First sample at which the decision is known (the device decides at the end of the
        DMA block that holds it).
    target_index : int
        Predicted sample of the target phase (0° = positive peak) at the ear; the
        application fires at ``target_index - output_latency``.
    amplitude_uv : float
        Down-state trough of the estimated slow oscillation (µV, negative), or the
        threshold-crossing value for :class:`NgoThreshold`.
    freq_hz : float
        Frequency used for the prediction.
    phase_at_decision : float
        Estimated phase at ``decision_index`` in degrees.
    """

    decision_index: int
    target_index: int
    amplitude_uv: float
    freq_hz: float
    phase_at_decision: float


@runtime_checkable
class PhaseEstimator(Protocol):
    """The streaming API every estimator implements."""

    sfreq: float
    block: int

    def scan(self, x_uv: np.ndarray, start: int) -> list[Candidate]:
        """Process the next samples (absolute index of ``x_uv[0]`` is ``start``)."""
        ...

    def snapshot(self) -> object:
        """A copy of the full state."""
        ...

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        ...


# --- compiled kernels -----------------------------------------------------------------------


@numba.njit(cache=True)
def _biquads(sos: np.ndarray, zi: np.ndarray, x: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Direct-form-II-transposed cascade (as CMSIS ``arm_biquad_cascade_df2T``), in place
    on the state ``zi`` (n_sections, 2); returns the filtered copy of ``x``."""
    y = x.copy()
    for s in range(sos.shape[0]):
        b0, b1, b2 = sos[s, 0], sos[s, 1], sos[s, 2]
        a1, a2 = sos[s, 4], sos[s, 5]
        z0, z1 = zi[s, 0], zi[s, 1]
        for i in range(y.shape[0]):
            xi = y[i]
            yi = b0 * xi + z0
            z0 = b1 * xi - a1 * yi + z1
            z1 = b2 * xi - a2 * yi
            y[i] = yi
        zi[s, 0], zi[s, 1] = z0, z1
    return y


@numba.njit(cache=True)
def _echt_dots(
    buf: np.ndarray, first_end: int, n_ends: int, step: int, wr: np.ndarray, wi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Complex dot products of the windows ending at ``first_end + k * step`` with the
    kernel.

    Each dot product is four partial sums (taps 0, 4, 8...; 1, 5, 9...; ...) added in tap
    order, then ``(s0 + s1) + (s2 + s3)``: a fixed order, so the result is identical
    whatever the chunking (no reassociation by the compiler without fastmath). The loops
    run tap by tap over all window ends at once: once the samples are split into ``step``
    phases, the samples one tap meets at consecutive ends are contiguous, and the compiler
    vectorises across ends (about twice as fast as one window after the other) without
    changing any sum.
    """
    n = wr.shape[0]
    s0 = first_end - n + 1
    n_ph = (buf.shape[0] - s0 + step - 1) // step + 1
    ph = np.zeros((step, n_ph))
    for i in range(s0, buf.shape[0]):
        d = i - s0
        ph[d % step, d // step] = buf[i]
    acc = np.zeros((8, n_ends))  # rows: real partial sums 0-3, imaginary 0-3
    n4 = n - n % 4
    for m in range(0, n4, 4):
        for c in range(4):
            tap = m + c
            row = ph[tap % step]
            off = tap // step
            w_r, w_i = wr[tap], wi[tap]
            acc_r, acc_i = acc[c], acc[4 + c]
            for k in range(n_ends):
                v = row[off + k]
                acc_r[k] += w_r * v
                acc_i[k] += w_i * v
    for tap in range(n4, n):  # the taps past the last multiple of four go to sum 0
        row = ph[tap % step]
        off = tap // step
        for k in range(n_ends):
            v = row[off + k]
            acc[0, k] += wr[tap] * v
            acc[4, k] += wi[tap] * v
    re = np.empty(n_ends)
    im = np.empty(n_ends)
    for k in range(n_ends):
        re[k] = (acc[0, k] + acc[1, k]) + (acc[2, k] + acc[3, k])
        im[k] = (acc[4, k] + acc[5, k]) + (acc[6, k] + acc[7, k])
    return re, im


# Decision state (float64 array): armed, trough, t90 (index or -1), prev phase, has prev.
_ST_ARMED, _ST_TROUGH, _ST_T90, _ST_PREV, _ST_HAS_PREV = range(5)


@numba.njit(cache=True)
def _decide(
    ends: np.ndarray,
    phase: np.ndarray,
    real: np.ndarray,
    amp: np.ndarray,
    valid: np.ndarray,
    st: np.ndarray,
    sfreq: float,
    threshold: float,
    decision_rad: float,
    min_amp: float,
    fmin: float,
    fmax: float,
) -> np.ndarray:  # pragma: no cover
    """The shared decision rule over per-block estimates; ``st`` is updated in place.

    Returns rows (decision index, target index, trough, freq, phase at decision)."""
    half = np.pi / 2
    out = np.empty((ends.shape[0], 5))
    n_out = 0
    for k in range(ends.shape[0]):
        if not valid[k]:
            continue
        p = phase[k]
        e = ends[k]
        # Entering the negative half-wave (phase passes 90° forwards): the start of the
        # interval the adaptive frequency is measured over.
        if st[_ST_HAS_PREV] > 0 and st[_ST_PREV] < half <= p and p - st[_ST_PREV] < np.pi:
            st[_ST_T90] = e
        st[_ST_PREV] = p
        st[_ST_HAS_PREV] = 1.0
        if abs(p) > half and real[k] <= threshold:  # a real down-state
            st[_ST_ARMED] = 1.0
            if real[k] < st[_ST_TROUGH]:
                st[_ST_TROUGH] = real[k]
        if st[_ST_ARMED] > 0 and decision_rad <= p < 0.0:
            trough = st[_ST_TROUGH]
            st[_ST_ARMED] = 0.0
            st[_ST_TROUGH] = 0.0
            if st[_ST_T90] < 0 or amp[k] < min_amp:
                continue
            advanced = (p + 2 * np.pi - half) / (2 * np.pi)  # cycles since 90°
            f = advanced * sfreq / (e - st[_ST_T90])
            if f < fmin or f > fmax:
                continue
            target = e + np.floor(-p / (2 * np.pi * f) * sfreq + 0.5)
            out[n_out, 0] = e
            out[n_out, 1] = target
            out[n_out, 2] = trough
            out[n_out, 3] = f
            out[n_out, 4] = p
            n_out += 1
        elif st[_ST_ARMED] > 0 and 0.0 <= p < half:  # the peak passed before a decision
            st[_ST_ARMED] = 0.0
            st[_ST_TROUGH] = 0.0
    return out[:n_out]


@numba.njit(cache=True)
def _pll(
    u: np.ndarray, st: np.ndarray, sfreq: float, kp: float, ki: float, fmin: float, fmax: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """Run the loop over band-passed samples ``u``; ``st`` = [theta, integrator, f, u_prev].

    Returns the NCO phase (wrapped), its frequency and the instantaneous amplitude."""
    n = u.shape[0]
    ph = np.empty(n)
    fr = np.empty(n)
    am = np.empty(n)
    theta, integ, f, uprev = st[0], st[1], st[2], st[3]
    f0 = 0.5 * (fmin + fmax)
    two_pi = 2.0 * np.pi
    for i in range(n):
        ui = u[i]
        # Quadrature from the derivative: for u = A cos(phi), -u'/omega = A sin(phi).
        q = -(ui - uprev) * sfreq / (two_pi * f)
        uprev = ui
        a = np.sqrt(ui * ui + q * q)
        # Phase detector: sin(phi - theta), normalised so the loop gain does not depend on
        # the EEG amplitude.
        err = 0.0
        if a > 1e-9:
            err = (q * np.cos(theta) - ui * np.sin(theta)) / a
        integ += ki * err
        if integ > fmax - f0:
            integ = fmax - f0
        elif integ < fmin - f0:
            integ = fmin - f0
        f = f0 + integ + kp * err
        if f < fmin:
            f = fmin
        elif f > fmax:
            f = fmax
        theta += two_pi * f / sfreq
        if theta >= np.pi:
            theta -= two_pi
        ph[i] = theta
        fr[i] = f
        am[i] = a
    st[0], st[1], st[2], st[3] = theta, integ, f, uprev
    return ph, fr, am


@numba.njit(cache=True)
def _ngo(
    y: np.ndarray, start: int, st: np.ndarray, threshold: float, delay: int
) -> np.ndarray:  # pragma: no cover
    """Downward crossings of ``threshold``; ``st`` = [previous sample, has previous]."""
    out = np.empty((y.shape[0], 2))
    n_out = 0
    prev, has = st[0], st[1]
    for i in range(y.shape[0]):
        if has > 0 and prev > threshold >= y[i]:
            out[n_out, 0] = start + i
            out[n_out, 1] = y[i]
            n_out += 1
        prev = y[i]
        has = 1.0
    st[0], st[1] = prev, has
    return out[:n_out]


# --- ECHT -----------------------------------------------------------------------------------


def echt_kernel(n: int, band: tuple[float, float], sfreq: float, order: int = 2) -> np.ndarray:
    """The complex kernel ``w`` with ``echt(window)[-1] == w @ window``.

    Follows the published recipe (Schreglmann et al. 2021, ``echt.m``): FFT of the
    ``n``-sample window, one-sided spectrum (DC and Nyquist kept, positive frequencies
    doubled), times the frequency response of a causal Butterworth band-pass, inverse FFT.
    Only the last output sample is needed, so the recipe collapses to one linear form.

    Parameters
    ----------
    n : int
        Window length in samples.
    band : tuple of float
        Band-pass edges in Hz.
    sfreq : float
        Sampling rate in Hz.
    order : int
        Butterworth order.

    Returns
    -------
    ndarray of complex, shape (n,)
    """
    b, a = signal.butter(order, band, "bandpass", fs=sfreq)
    freqs = np.fft.fftfreq(n, 1 / sfreq)
    h = np.zeros(n)
    h[0] = 1
    if n % 2 == 0:
        h[n // 2] = 1
        h[1 : n // 2] = 2
    else:
        h[1 : (n + 1) // 2] = 2
    _, resp = signal.freqz(b, a, worN=freqs, fs=sfreq)
    g = h * resp
    # Last IFFT output: (1/n) sum_k X_k g_k exp(2 pi i k (n-1)/n), X_k = sum_m x_m exp(-2 pi i
    # k m / n)  =>  w_m = (1/n) sum_k g_k exp(2 pi i k (n-1-m)/n) = ifft(g)[(n-1-m) mod n].
    return np.fft.ifft(g)[(n - 1 - np.arange(n)) % n]


class _DecidingEstimator:
    """Common parameters and state of the estimators that use :func:`_decide`."""

    def __init__(
        self,
        sfreq: float,
        block: int,
        threshold_uv: float,
        decision_deg: float,
        min_amplitude_uv: float,
        freq_range: tuple[float, float],
    ) -> None:
        if not -90.0 <= decision_deg < 0.0:
            raise ValueError(f"decision_deg must be in [-90, 0), got {decision_deg}.")
        if not 0 < freq_range[0] < freq_range[1] < sfreq / 2:
            raise ValueError(f"freq_range must satisfy 0 < low < high < Nyquist: {freq_range}")
        self.sfreq = float(sfreq)
        self.block = int(block)
        self.threshold_uv = float(threshold_uv)
        self.decision_deg = float(decision_deg)
        self.min_amplitude_uv = float(min_amplitude_uv)
        self.freq_range = (float(freq_range[0]), float(freq_range[1]))
        self._dstate = np.array([0.0, 0.0, -1.0, 0.0, 0.0])
        self._next: int | None = None  # the sample the next scan must start at

    def _check_start(self, start: int, n: int) -> None:
        if self._next is not None and start != self._next:
            raise ValueError(f"Samples must be contiguous: expected {self._next}, got {start}.")
        self._next = start + n

    def _block_ends(self, start: int, n: int) -> np.ndarray:
        first = start + (-(start + 1)) % self.block  # first e >= start with (e+1) % B == 0
        return np.arange(first, start + n, self.block, dtype=np.int64)

    def _candidates(
        self,
        ends: np.ndarray,
        phase: np.ndarray,
        real: np.ndarray,
        amp: np.ndarray,
        valid: np.ndarray,
    ) -> list[Candidate]:
        rows = _decide(
            ends.astype(np.float64),
            phase,
            real,
            amp,
            valid,
            self._dstate,
            self.sfreq,
            self.threshold_uv,
            np.radians(self.decision_deg),
            self.min_amplitude_uv,
            self.freq_range[0],
            self.freq_range[1],
        )
        return [
            Candidate(int(r[0]), int(r[1]), float(r[2]), float(r[3]), float(np.degrees(r[4])))
            for r in rows
        ]


class EchtEstimator(_DecidingEstimator):
    """Endpoint-corrected Hilbert transform, evaluated once per DMA block.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block (the estimate is computed at the last sample of each).
    window_s : float
        Length of the analysed window (s).
    band : tuple of float
        Band of the causal Butterworth response used for the endpoint correction. Wider
        than the 0.5-2 Hz ground-truth band on purpose: a narrow causal band-pass rings and
        lags at the window's end, and on the DREAMS excerpt used for tuning (1) 0.3-3 Hz
        tracked the zero-phase 0.5-2 Hz phase better.
    threshold_uv : float
        The estimated signal must reach this (negative) value in its down-state to arm.
    decision_deg : float
        Phase at which the decision is taken (-90 <= decision_deg < 0).
    min_amplitude_uv : float
        Minimal analytic amplitude at the decision (the wave must still be large).
    freq_range : tuple of float
        Accepted range of the adaptive frequency (Hz).
    order : int
        Order of the Butterworth response.
    """

    name = "echt"

    def __init__(
        self,
        sfreq: float = _FS,
        block: int = _BLOCK,
        window_s: float = 2.0,
        band: tuple[float, float] = (0.3, 3.0),
        threshold_uv: float = -30.0,
        decision_deg: float = -20.0,
        min_amplitude_uv: float = 25.0,
        freq_range: tuple[float, float] = (0.5, 2.0),
        order: int = 2,
    ) -> None:
        super().__init__(sfreq, block, threshold_uv, decision_deg, min_amplitude_uv, freq_range)
        self.n = int(round(window_s * sfreq))
        self.band = band
        w = echt_kernel(self.n, band, sfreq, order)
        self._wr = np.ascontiguousarray(w.real)
        self._wi = np.ascontiguousarray(w.imag)
        self._hist = np.zeros(self.n - 1)  # the last n-1 samples before the next scan
        self._first: int | None = None  # absolute index of the stream's first sample

    @property
    def cycles_per_block(self) -> int:
        """Declared MCU cost per DMA block: an ``n``-tap complex dot product, atan2 and a
        square root, the decision. (The FFT form, rfft + complex multiply + irfft of
        512 points, would cost ~2 * 40 * 512 + 6 * 256 = 42 k cycles; the single-output
        form is ~3 k.)"""
        return 2 * self.n * CYCLES_PER_MAC + 2 * CYCLES_PER_TRIG + DECISION_CYCLES_PER_BLOCK

    def analytic(self, x_uv: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ends in ``x_uv`` and the analytic signal there, without changing state."""
        x = np.ascontiguousarray(x_uv, dtype=np.float64)
        buf = np.concatenate([self._hist, x])
        ends = self._block_ends(start, x.size)
        if ends.size == 0:
            return ends, np.empty(0, dtype=complex)
        # buf index of absolute sample e is e - start + n - 1.
        re, im = _echt_dots(
            buf, int(ends[0] - start + self.n - 1), ends.size, self.block, self._wr, self._wi
        )
        return ends, re + 1j * im

    def scan(self, x_uv: np.ndarray, start: int) -> list[Candidate]:
        """Process the next samples of one EEG channel.

        Parameters
        ----------
        x_uv : ndarray, shape (n,)
            EEG in µV.
        start : int
            Absolute index of ``x_uv[0]``; calls must be contiguous.

        Returns
        -------
        list of Candidate
            In order of decision.
        """
        x = np.ascontiguousarray(x_uv, dtype=np.float64)
        self._check_start(start, x.size)
        if self._first is None:
            self._first = start
        ends, z = self.analytic(x, start)
        cands: list[Candidate] = []
        if ends.size:
            # The window must hold real samples only (no zero history at switch-on).
            valid = ends >= self._first + self.n - 1
            cands = self._candidates(ends, np.angle(z), z.real, np.abs(z), valid)
        keep = self.n - 1
        if x.size >= keep:
            self._hist = x[x.size - keep :].copy()
        else:
            self._hist = np.concatenate([self._hist[x.size :], x])
        return cands

    def snapshot(self) -> object:
        """A copy of the full state."""
        return copy_state((self._hist, self._dstate, self._first, self._next))

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        hist, dstate, first, nxt = copy_state(state)  # type: ignore[misc]
        self._hist, self._dstate, self._first, self._next = hist, dstate, first, nxt


class PllEstimator(_DecidingEstimator):
    """Phase-locked loop on the band-passed EEG, evaluated per sample, decided per block.

    Parameters
    ----------
    sfreq, block, threshold_uv, decision_deg, min_amplitude_uv, freq_range
        As for :class:`EchtEstimator`; ``freq_range`` also bounds the oscillator.
    band : tuple of float
        Causal Butterworth band-pass in front of the loop.
    loop_hz : float
        Natural frequency of the second-order loop (its bandwidth): low enough to
        ignore noise within a cycle, high enough to follow a train of slow waves.
    damping : float
        Damping ratio of the loop (0.707: critically damped-ish, no overshoot to speak of).
    order : int
        Butterworth order of the band-pass (per edge).
    """

    name = "pll"

    def __init__(
        self,
        sfreq: float = _FS,
        block: int = _BLOCK,
        band: tuple[float, float] = (0.3, 3.0),
        threshold_uv: float = -30.0,
        decision_deg: float = -20.0,
        min_amplitude_uv: float = 25.0,
        freq_range: tuple[float, float] = (0.5, 2.0),
        loop_hz: float = 1.0,
        damping: float = 0.707,
        order: int = 2,
    ) -> None:
        super().__init__(sfreq, block, threshold_uv, decision_deg, min_amplitude_uv, freq_range)
        self.band = band
        self.sos = signal.butter(order, band, "bandpass", fs=sfreq, output="sos")
        self._zi = np.zeros((self.sos.shape[0], 2))
        # Standard second-order PLL design (Gardner, Phaselock Techniques): detector gain 1
        # (normalised sin), oscillator gain 2*pi rad/s per Hz; the proportional gain sets
        # the damping and the integral gain the natural frequency.
        wn = 2 * np.pi * loop_hz
        self.kp = 2 * damping * wn / (2 * np.pi)
        self.ki = wn * wn / (2 * np.pi) / sfreq
        self._pst = np.array([0.0, 0.0, 0.5 * sum(freq_range), 0.0])

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: band-pass, quadrature, sin/cos, sqrt, loop; the
        decision (once per block) spread over the block's samples."""
        filt = self.sos.shape[0] * CYCLES_PER_SECTION_SAMPLE
        return filt + 3 * CYCLES_PER_TRIG + 30 + DECISION_CYCLES_PER_BLOCK // self.block

    def scan(self, x_uv: np.ndarray, start: int) -> list[Candidate]:
        """Process the next samples of one EEG channel (see :meth:`EchtEstimator.scan`)."""
        x = np.ascontiguousarray(x_uv, dtype=np.float64)
        self._check_start(start, x.size)
        u = _biquads(self.sos, self._zi, x)
        ph, _, am = _pll(
            u, self._pst, self.sfreq, self.kp, self.ki, self.freq_range[0], self.freq_range[1]
        )
        ends = self._block_ends(start, x.size)
        if ends.size == 0:
            return []
        idx = ends - start
        valid = np.ones(ends.size, dtype=np.bool_)
        return self._candidates(ends, ph[idx], u[idx], am[idx], valid)

    def snapshot(self) -> object:
        """A copy of the full state."""
        return copy_state((self._zi, self._pst, self._dstate, self._next))

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        zi, pst, dstate, nxt = copy_state(state)  # type: ignore[misc]
        self._zi, self._pst, self._dstate, self._next = zi, pst, dstate, nxt


class NgoThreshold:
    """Ngo et al. (2013): a crossing below a fixed threshold, the stimulus a fixed delay on.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block (kept for the common API; the crossing is known at its
        sample).
    threshold_uv : float
        Negative threshold (Ngo et al.: -80 µV).
    delay_s : float
        Delay from the crossing to the stimulus at the ear (Ngo et al.: 0.5 s).
    band : tuple of float
        Causal band-pass in front of the threshold (Ngo et al. filtered 0.25-4 Hz).
    order : int
        Butterworth order.
    """

    name = "ngo"

    def __init__(
        self,
        sfreq: float = _FS,
        block: int = _BLOCK,
        threshold_uv: float = -80.0,
        delay_s: float = 0.5,
        band: tuple[float, float] = (0.25, 4.0),
        order: int = 2,
    ) -> None:
        self.sfreq = float(sfreq)
        self.block = int(block)
        self.threshold_uv = float(threshold_uv)
        self.delay_s = float(delay_s)
        self.delay = int(round(delay_s * sfreq))
        self.sos = signal.butter(order, band, "bandpass", fs=sfreq, output="sos")
        self._zi = np.zeros((self.sos.shape[0], 2))
        self._st = np.zeros(2)
        self._next: int | None = None

    @property
    def cycles_per_sample(self) -> int:
        """Declared MCU cost per sample: the band-pass and one compare."""
        return self.sos.shape[0] * CYCLES_PER_SECTION_SAMPLE + 4

    def scan(self, x_uv: np.ndarray, start: int) -> list[Candidate]:
        """Process the next samples of one EEG channel (see :meth:`EchtEstimator.scan`)."""
        x = np.ascontiguousarray(x_uv, dtype=np.float64)
        if self._next is not None and start != self._next:
            raise ValueError(f"Samples must be contiguous: expected {self._next}, got {start}.")
        self._next = start + x.size
        y = _biquads(self.sos, self._zi, x)
        rows = _ngo(y, start, self._st, self.threshold_uv, self.delay)
        # Phase at the crossing: a falling signal below zero is in its second quarter
        # (90°..180°); a fixed delay ignores it, so report the nominal 135°.
        return [Candidate(int(r[0]), int(r[0]) + self.delay, float(r[1]), 1.0, 135.0) for r in rows]

    def snapshot(self) -> object:
        """A copy of the full state."""
        return copy_state((self._zi, self._st, self._next))

    def restore(self, state: object) -> None:
        """Return to a state taken by :meth:`snapshot`."""
        self._zi, self._st, self._next = copy_state(state)  # type: ignore[misc]


ESTIMATORS = {"echt": EchtEstimator, "pll": PllEstimator, "ngo": NgoThreshold}


def make_estimator(name: str, sfreq: float = _FS, block: int = _BLOCK, **kwargs) -> PhaseEstimator:
    """Build an estimator by name (``"echt"``, ``"pll"``, ``"ngo"``).

    Parameters
    ----------
    name : str
        Estimator name.
    sfreq : float
        Sampling rate in Hz.
    block : int
        Samples per DMA block.
    **kwargs
        Passed to the estimator (e.g. ``threshold_uv``).

    Returns
    -------
    PhaseEstimator
    """
    if name not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {name!r}; expected one of {sorted(ESTIMATORS)}.")
    return ESTIMATORS[name](sfreq=sfreq, block=block, **kwargs)

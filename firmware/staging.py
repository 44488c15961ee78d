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

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import signal

from firmware.dsp import _sosfilt
from firmware.stager import EpochDecision
from hal.base import STAGES

logger = logging.getLogger(__name__)

__all__ = [
    "EPOCH_S",
    "FEATURES_EEG",
    "FEATURES_EMG",
    "FEATURES_EOG",
    "MODEL_PATH",
    "OnlineStager",
    "RunningNorm",
    "epoch_features",
    "feature_names",
]

#: Epoch length in seconds (AASM).
EPOCH_S = 30.0
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


def _welch(x: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD (µV²/Hz) per 4-s segment: returns freqs and (n_segments, n_freqs)."""
    nper = round(_WIN_S * sfreq)
    step = round(_STEP_S * sfreq)
    n_seg = max(1, 1 + (x.size - nper) // step)
    idx = np.arange(nper)[None, :] + step * np.arange(n_seg)[:, None]
    seg = x[np.minimum(idx, x.size - 1)]
    seg = seg - seg.mean(axis=1, keepdims=True)
    win = np.hanning(nper)
    spec = np.abs(np.fft.rfft(seg * win, axis=1)) ** 2 / (sfreq * np.sum(win**2))
    spec[:, 1:-1] *= 2.0
    return np.fft.rfftfreq(nper, 1.0 / sfreq), spec


def _envelope_index(y: np.ndarray, sfreq: float) -> float:
    """log10 of the 95th percentile over the median of the 0.5-s RMS envelope of ``y``."""
    n = max(1, round(0.5 * sfreq))
    m = y.size // n
    if m < 4:
        return 0.0
    rms = np.sqrt(np.mean(y[: m * n].reshape(m, n) ** 2, axis=1)) + 1e-9
    return float(np.log10(np.percentile(rms, 95) / np.median(rms)))


class _Filters:
    """Band-pass filters run continuously across epochs (state carried, as on the device)."""

    def __init__(self, sfreq: float, has_eog: bool) -> None:
        nyq = sfreq / 2.0
        self.sos_slow = signal.butter(2, [0.5, 2.0], "bandpass", fs=sfreq, output="sos")
        self.sos_sigma = signal.butter(
            2, [12.0, min(15.0, 0.9 * nyq)], "bandpass", fs=sfreq, output="sos"
        )
        hi = min(24.0, 0.9 * nyq)
        self.sos_emg = signal.butter(2, [12.0, hi], "bandpass", fs=sfreq, output="sos")
        self.has_eog = has_eog
        self.reset()

    def reset(self) -> None:
        """Forget the filter state (after bad signal, whose samples would ring on)."""
        self.z_slow = np.zeros((self.sos_slow.shape[0], 2))
        self.z_sigma = np.zeros((self.sos_sigma.shape[0], 2))
        self.z_eog = np.zeros((self.sos_slow.shape[0], 2))
        self.z_emg = np.zeros((self.sos_emg.shape[0], 2))
        self.primed = False

    def run(self, sos: np.ndarray, name: str, x: np.ndarray) -> np.ndarray:
        z = getattr(self, name)
        if not self.primed:
            # Start the filter at steady state for the epoch's first value (no step).
            z = signal.sosfilt_zi(sos) * x[0]
        # The compiled kernel of scipy.signal.sosfilt without its per-call validation.
        y, z = _sosfilt(sos, x[np.newaxis], z[:, np.newaxis, :])
        setattr(self, name, z[:, 0, :])
        return y[0]


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
    x = np.atleast_2d(np.asarray(eeg, dtype=np.float64))[0]
    if filters is None:
        filters = _Filters(sfreq, eog is not None)
    freqs, seg_psd = _welch(x, sfreq)
    psd = seg_psd.mean(axis=0)
    df = freqs[1] - freqs[0]
    sel = (freqs >= _F_LO) & (freqs < _F_HI)
    p = psd[sel]
    fs = freqs[sel]
    total = p.sum() * df + 1e-12
    out: list[float] = [math.log10(total)]
    for lo, hi in _BANDS:
        b = p[(fs >= lo) & (fs < hi)].sum() * df
        out.append(math.log10(b / total + 1e-9))
    pn = p / p.sum()
    out.append(float(-np.sum(pn * np.log(pn + 1e-20)) / math.log(pn.size)))
    cum = np.cumsum(pn)
    out.append(float(fs[np.searchsorted(cum, 0.5)]))
    out.append(float(fs[min(np.searchsorted(cum, 0.95), fs.size - 1)]))

    def band_mean(lo: float, hi: float) -> float:
        return float(np.mean(np.log10(p[(fs >= lo) & (fs < hi)] + 1e-12)))

    out.append(band_mean(12.0, 15.0) - 0.5 * (band_mean(9.0, 11.0) + band_mean(16.0, 19.0)))
    seg_tot = seg_psd[:, (freqs >= _F_LO) & (freqs < _F_HI)].sum(axis=1) * df + 1e-12
    out.append(float(np.std(np.log10(seg_tot))))
    slow = filters.run(filters.sos_slow, "z_slow", x)
    out.append(float(np.mean(np.abs(slow) > 37.5)))
    sigma = filters.run(filters.sos_sigma, "z_sigma", x)
    out.append(_envelope_index(sigma, sfreq))
    if eog is not None:
        e = np.asarray(eog, dtype=np.float64)
        eslow = filters.run(filters.sos_slow, "z_eog", e)
        pe = float(np.mean(eslow**2)) + 1e-9
        ps = float(np.mean(slow**2)) + 1e-9
        out.append(math.log10(pe))
        out.append(math.log10(pe / ps))
        c = np.corrcoef(eslow, slow)[0, 1] if np.std(eslow) > 0 and np.std(slow) > 0 else 0.0
        out.append(float(c))
    if emg is not None:
        m = filters.run(filters.sos_emg, "z_emg", np.asarray(emg, dtype=np.float64))
        out.append(math.log10(float(np.mean(m**2)) + 1e-9))
        out.append(_envelope_index(m, sfreq))
    filters.primed = True
    return np.asarray(out)


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

    def update(self, x: np.ndarray) -> None:
        """Add one good epoch's features."""
        self.n += 1
        self.s += x
        self.q += x * x

    def z(self, x: np.ndarray) -> np.ndarray:
        """z-scores of ``x`` against the night so far and the prior."""
        d = self.w + self.n
        mean = (self.w * self.m0 + self.s) / d
        var = (self.w * (self.v0 + self.m0**2) + self.q) / d - mean**2
        return (x - mean) / np.sqrt(np.maximum(var, 1e-3 * self.v0 + 1e-12))


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
        if sfreq < 50.0:
            raise ValueError(f"sfreq must be at least 50 Hz (features use 0.5-24 Hz), got {sfreq}")
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
        finite = all(a is None or bool(np.all(np.isfinite(a))) for a in (x[0], eog_a, emg_a))
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

"""Offline analysis of a night: the ground truth the firmware is judged against.

Phase (DESIGN, "How accuracy is measured"): offline, zero-phase Butterworth order 2,
0.5-2 Hz (``sosfiltfilt``), Hilbert; 0° is the slow oscillation's positive peak. These use
the whole night and the future, which the firmware never may; that is why they are the
referee and live in ``sim``, not in ``firmware``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from scipy import fft, signal

#: Stimulus-locked windows, seconds around the onset.
EVOKED_TMIN, EVOKED_TMAX = -1.0, 3.0


def hilbert_quadrature(x: np.ndarray) -> np.ndarray:
    """The imaginary part of ``scipy.signal.hilbert(x)``, taken with real FFTs.

    Real FFTs are half the size of the complex ones ``hilbert`` uses: on an 8-h night at
    250 Hz this is 0.7 s instead of 1.9 s, for the same numbers to about 1e-14 relative.
    The result has the precision of ``x``.

    Parameters
    ----------
    x : ndarray, shape (n,)
        A real signal.

    Returns
    -------
    ndarray, shape (n,)
        Its Hilbert transform.
    """
    spectrum = fft.rfft(x)
    # H: -90° on positive frequencies; DC (and Nyquist, for even sizes) have no quadrature.
    spectrum *= -1j
    spectrum[0] = 0.0
    if x.size % 2 == 0:
        spectrum[-1] = 0.0
    return fft.irfft(spectrum, x.size)


def ground_truth_phase(x_uv: np.ndarray, sfreq: float) -> np.ndarray:
    """Offline slow-oscillation phase in degrees (0° = positive peak) of every sample.

    The angle of ``scipy.signal.hilbert`` of the band-passed signal
    (:func:`hilbert_quadrature`).

    Parameters
    ----------
    x_uv : ndarray, shape (n,)
        EEG, µV.
    sfreq : float
        Sampling rate in Hz.

    Returns
    -------
    ndarray of float64, shape (n,)
        Phase in degrees, in [-180, 180].
    """
    sos = signal.butter(2, [0.5, 2.0], "bandpass", fs=sfreq, output="sos")
    band = signal.sosfiltfilt(sos, x_uv)
    return np.degrees(np.arctan2(hilbert_quadrature(band), band))


# One lock per cached quantity: ``write_outputs`` starts these computations on a worker
# thread while it writes the files, and the report must wait for them, not redo them.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _cached(result, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``result.<name>``, computed by ``compute()`` the first time (thread-safe)."""
    value = getattr(result, name, None)
    if value is None:
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(name, threading.Lock())
        with lock:
            value = getattr(result, name, None)
            if value is None:
                value = compute()
                setattr(result, name, value)
    return value


def recorded_eeg(result) -> np.ndarray | None:
    """The night's first EEG row as recorded (float32 µV, not a copy); None without one.

    Parameters
    ----------
    result : sim.runner.RunResult
        The night.

    Returns
    -------
    ndarray or None
        None when no samples were kept or there is no EEG channel.
    """
    if result.recorded is None or "eeg" not in result.ch_roles:
        return None
    return result.recorded[result.ch_roles.index("eeg")]


def recorded_phase(result) -> np.ndarray | None:
    """:func:`ground_truth_phase` of the night's first EEG row, computed once per result.

    The summary and the report both need it; on an 8-h night the Hilbert transform of
    7.2 million samples is seconds of work, so it is kept on the result.

    Parameters
    ----------
    result : sim.runner.RunResult
        The night.

    Returns
    -------
    ndarray of float64 or None
        Phase in degrees per sample; None as for :func:`recorded_eeg`.
    """
    x = recorded_eeg(result)
    if x is None:
        return None
    return _cached(
        result,
        "_ground_truth_phase",
        lambda: ground_truth_phase(x.astype(np.float64), result.sfreq),
    )


def recorded_sigma_envelope(result) -> np.ndarray | None:
    """:func:`sigma_envelope` of the night's first EEG row, computed once per result.

    Computed in float32, as recorded: it is only drawn (the evoked spindle).

    Parameters
    ----------
    result : sim.runner.RunResult
        The night.

    Returns
    -------
    ndarray of float32 or None
        Envelope in µV per sample; None as for :func:`recorded_eeg`.
    """
    x = recorded_eeg(result)
    if x is None:
        return None
    return _cached(result, "_sigma_envelope", lambda: sigma_envelope(x, result.sfreq))


def circular_mean_deg(phases_deg: np.ndarray) -> float:
    """Circular mean in degrees, in (-180, 180]; NaN when empty.

    Parameters
    ----------
    phases_deg : ndarray
        Phases in degrees.

    Returns
    -------
    float
    """
    if len(phases_deg) == 0:
        return float("nan")
    z = np.mean(np.exp(1j * np.radians(phases_deg)))
    return float(np.degrees(np.angle(z)))


def resultant_length(phases_deg: np.ndarray) -> float:
    """Mean resultant length R in [0, 1] (1 = every phase identical); NaN when empty.

    Parameters
    ----------
    phases_deg : ndarray
        Phases in degrees.

    Returns
    -------
    float
    """
    if len(phases_deg) == 0:
        return float("nan")
    return float(np.abs(np.mean(np.exp(1j * np.radians(phases_deg)))))


def phase_metrics(phases_deg: np.ndarray) -> dict[str, float]:
    """Circular mean error (target 0°), R and the share within ±90° of the up-phase.

    Parameters
    ----------
    phases_deg : array_like
        Phases in degrees (0° = positive peak) at the stimulus onsets.

    Returns
    -------
    dict
        ``n`` (count), ``mean_error_deg`` (:func:`circular_mean_deg`),
        ``resultant_length`` (:func:`resultant_length`) and ``within_90`` (fraction with
        ``|phase| <= 90``); NaN figures when empty.
    """
    phases = np.asarray(phases_deg, dtype=float)
    return {
        "n": int(phases.size),
        "mean_error_deg": circular_mean_deg(phases),
        "resultant_length": resultant_length(phases),
        "within_90": float(np.mean(np.abs(phases) <= 90)) if phases.size else float("nan"),
    }


def evoked(
    x: np.ndarray,
    sfreq: float,
    onsets: np.ndarray,
    tmin: float = EVOKED_TMIN,
    tmax: float = EVOKED_TMAX,
) -> tuple[np.ndarray, np.ndarray]:
    """Stimulus-locked average of ``x`` (one channel) over the onsets that fit the window.

    Parameters
    ----------
    x : ndarray, shape (n,)
        One channel (any unit; NaN samples are left out of the average).
    sfreq : float
        Sampling rate in Hz.
    onsets : array_like of int
        Onsets, sample indices into ``x``.
    tmin, tmax : float
        Window in seconds around each onset, ``[tmin, tmax)`` rounded to samples.

    Returns
    -------
    times : ndarray
        Seconds relative to the onset.
    mean : ndarray
        Average across onsets (NaN when no onset fits).
    """
    lo, hi = round(tmin * sfreq), round(tmax * sfreq)
    times = np.arange(lo, hi) / sfreq
    ok = [int(o) for o in onsets if o + lo >= 0 and o + hi <= x.size]
    if not ok:
        return times, np.full(times.size, np.nan)
    idx = np.asarray(ok)[:, np.newaxis] + np.arange(lo, hi)
    # Averaged in float64 whatever the precision of x.
    return times, np.nanmean(x[idx], axis=0, dtype=np.float64)


def sigma_envelope(x_uv: np.ndarray, sfreq: float) -> np.ndarray:
    """Offline spindle-band (11-16 Hz) amplitude envelope, for the evoked spindle.

    The envelope is ``|x + i H(x)|`` of the band-passed signal, as with
    ``scipy.signal.hilbert`` (:func:`hilbert_quadrature`). It is computed in the precision
    of ``x_uv``: float32 halves the time again on a whole night, for a curve that is only
    drawn.

    Parameters
    ----------
    x_uv : ndarray, shape (n,)
        EEG, µV (float32 or float64).
    sfreq : float
        Sampling rate in Hz.

    Returns
    -------
    ndarray, shape (n,)
        Envelope in µV: float32 for a float32 input, else float64.
    """
    dtype = np.float32 if x_uv.dtype == np.float32 else np.float64
    sos = signal.butter(4, [11.0, 16.0], "bandpass", fs=sfreq, output="sos").astype(dtype)
    band = signal.sosfiltfilt(sos, x_uv)
    return np.hypot(band, hilbert_quadrature(band))


def _stage_at(hypnogram: list[str] | None, t: float, epoch_s: float = 30.0) -> str | None:
    if not hypnogram:
        return None
    k = int(t // epoch_s)
    return hypnogram[k] if 0 <= k < len(hypnogram) else None


def night_analysis(result) -> dict:
    """Offline figures of a night for summary.json: phase accuracy and stimuli per stage.

    Phases are read from the primary EEG channel the firmware saw, at the onset of every
    stimulus delivered (and, for a sham program, of every stimulus it would have played).
    Stages come from the sleeper's own hypnogram when the source is the virtual sleeper,
    else from the online stager.

    Parameters
    ----------
    result : sim.runner.RunResult
        The night.

    Returns
    -------
    dict
        ``stage_reference``, ``delivered_per_stage``, ``delivered_per_min_n2_n3`` (per
        minute of N2 and N3 in the reference), ``share_outside_n2_n3`` and, when there
        are EEG samples and onsets, ``phase_delivered`` and ``phase_sham``
        (:func:`phase_metrics`).
    """
    stims = [e for e in result.events if e["kind"] == "stim"]
    played = [e for e in stims if e["delivered"]]
    sham = [e for e in stims if e.get("reason") == "sham"]
    truth = result.true_hypnogram
    online = [s for _, s in sorted(result.hypnogram)]
    reference = truth or online
    out: dict = {"stage_reference": "sleeper" if truth else "online stager"}
    per_stage = {s: 0 for s in ("W", "N1", "N2", "N3", "R")}
    for e in played:
        stage = _stage_at(reference, e["t"])
        if stage is not None:
            per_stage[stage] += 1
    out["delivered_per_stage"] = per_stage
    n2n3_min = sum(s in ("N2", "N3") for s in reference) * 0.5
    out["delivered_per_min_n2_n3"] = len(played) / n2n3_min if n2n3_min else 0.0
    out["share_outside_n2_n3"] = (
        1 - (per_stage["N2"] + per_stage["N3"]) / len(played) if played else 0.0
    )
    truth_phase = recorded_phase(result)
    if truth_phase is not None:
        for name, group in (("phase_delivered", played), ("phase_sham", sham)):
            idx = [round(e["t"] * result.sfreq) for e in group]
            idx = [i for i in idx if 0 <= i < truth_phase.size]
            if idx:
                out[name] = phase_metrics(truth_phase[idx])
    return out

"""Shared fixtures: small synthetic sources so tests do not depend on the sleeper's model."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from hal.base import ChannelSpec, SourceInfo

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: The compiled kernels repeat NumPy's and SciPy's arithmetic operation for operation and
#: give the same bits on x86-64 Linux, where that was verified. Elsewhere libm, SIMD paths
#: or fused multiply-add may round differently: there they must agree to rounding.
BIT_EXACT_PLATFORM = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def same_numbers(a, b, signed_zeros: bool = False) -> bool:
    """Whether a kernel's result ``a`` equals the NumPy reference ``b``: bit for bit (NaN
    where NaN; signed zeros too if asked) on :data:`BIT_EXACT_PLATFORM`, else to within a
    few dozen units in the last place of the reference's largest value."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if BIT_EXACT_PLATFORM or a.dtype.kind not in "fc":
        if signed_zeros:
            return a.tobytes() == b.tobytes()
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    eps = float(np.finfo(a.dtype).eps)
    finite = np.abs(b[np.isfinite(b)])
    scale = float(finite.max()) if finite.size else 0.0
    return bool(np.allclose(a, b, rtol=64 * eps, atol=64 * eps * scale, equal_nan=True))


REPO = Path(__file__).resolve().parents[1]
DREAMS = REPO.parent / "shared" / "data" / "dreams"


class ArraySource:
    """A SignalSource over an in-memory array (volts), for tests."""

    def __init__(self, data: np.ndarray, sfreq: float, channels: list[tuple[str, str]]):
        self.data = np.asarray(data, dtype=np.float64)
        self.info = SourceInfo(
            sfreq=sfreq,
            channels=tuple(ChannelSpec(n, r) for n, r in channels),
            n_samples=self.data.shape[1],
            description="array",
        )
        self.closed = False

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[:, start : min(stop, self.data.shape[1])].copy()

    def close(self) -> None:
        self.closed = True


def slow_wave_eeg(seconds: float, sfreq: float, seed: int, amp_uv: float = 80.0) -> np.ndarray:
    """EEG-like test signal: a ~0.9 Hz slow oscillation with jitter plus 1/f-ish noise, volts."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    freq = 0.9 + 0.1 * np.sin(2 * np.pi * t / 37.0)
    phase = 2 * np.pi * np.cumsum(freq) / sfreq
    noise = np.cumsum(rng.standard_normal(n)) * 0.3
    noise -= np.convolve(noise, np.ones(250) / 250, mode="same")
    return (amp_uv * np.cos(phase) + noise + 3 * rng.standard_normal(n)) * 1e-6


@pytest.fixture
def slow_wave_source() -> ArraySource:
    """Five minutes of slow waves on one EEG channel at 250 Hz."""
    sfreq = 250.0
    eeg = slow_wave_eeg(300, sfreq, seed=0)
    return ArraySource(eeg[np.newaxis], sfreq, [("C4-M1", "eeg")])


def distress_source(seconds: float = 240.0, sfreq: float = 250.0, seed: int = 0) -> ArraySource:
    """EEG, ECG, chin EMG and accelerometer with one distress episode (volts, g).

    The heart beats at 60 bpm, then at 88 bpm from 100 s to 170 s (continuous phase);
    during that stretch the chin EMG tone triples and there is a 2-s head movement at
    150 s.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    on, off = 100.0, 170.0
    f0, f1 = 1.0, 88.0 / 60.0
    phase = t * f0 + (f1 - f0) * np.clip(np.minimum(t, off) - on, 0, None)
    frac = phase - np.round(phase)
    ecg = 1e-3 * np.exp(-0.5 * (frac / 0.012) ** 2)
    distress = (t >= on) & (t < off)
    emg = rng.standard_normal(n) * np.where(distress, 6e-6, 2e-6)
    acc = 0.002 * rng.standard_normal(n)
    move = (t >= 150.0) & (t < 152.0)
    acc[move] += 0.12 * np.sin(2 * np.pi * 1.5 * t[move])
    eeg = slow_wave_eeg(seconds, sfreq, seed=seed, amp_uv=30.0)
    return ArraySource(
        np.stack([eeg, ecg, emg, acc]),
        sfreq,
        [("C4-M1", "eeg"), ("ECG", "ecg"), ("Chin", "emg"), ("Accel", "accel")],
    )

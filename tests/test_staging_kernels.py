"""The compiled feature kernels of firmware/staging.py equal the NumPy formulation.

The reference below is the NumPy code the kernels replaced (the specification of the
features); the stager's decisions rest on these numbers, so they must not move by an ulp
where bit-identity was verified (``conftest.same_numbers``), nor beyond rounding elsewhere.
"""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np
import pytest
from conftest import same_numbers
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal

from firmware import staging
from firmware.dsp import _sosfilt
from firmware.staging import RunningNorm, epoch_features, feature_names

_BANDS = ((0.5, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 12.0), (12.0, 15.0), (15.0, 24.0))


# ---- reference: the NumPy formulation -------------------------------------------------------
def _ref_welch(x: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    nper = round(4.0 * sfreq)
    step = round(2.0 * sfreq)
    n_seg = max(1, 1 + (x.size - nper) // step)
    idx = np.arange(nper)[None, :] + step * np.arange(n_seg)[:, None]
    seg = x[np.minimum(idx, x.size - 1)]
    seg = seg - seg.mean(axis=1, keepdims=True)
    win = np.hanning(nper)
    spec = np.abs(np.fft.rfft(seg * win, axis=1)) ** 2 / (sfreq * np.sum(win**2))
    spec[:, 1:-1] *= 2.0
    return np.fft.rfftfreq(nper, 1.0 / sfreq), spec


def _ref_envelope_index(y: np.ndarray, sfreq: float) -> float:
    n = max(1, round(0.5 * sfreq))
    m = y.size // n
    if m < 4:
        return 0.0
    rms = np.sqrt(np.mean(y[: m * n].reshape(m, n) ** 2, axis=1)) + 1e-9
    return float(np.log10(np.percentile(rms, 95) / np.median(rms)))


class _RefFilters:
    def __init__(self, sfreq: float) -> None:
        nyq = sfreq / 2.0
        self.sos = {
            "slow": signal.butter(2, [0.5, 2.0], "bandpass", fs=sfreq, output="sos"),
            "sigma": signal.butter(
                2, [12.0, min(15.0, 0.9 * nyq)], "bandpass", fs=sfreq, output="sos"
            ),
            "emg": signal.butter(
                2, [12.0, min(24.0, 0.9 * nyq)], "bandpass", fs=sfreq, output="sos"
            ),
        }
        self.sos["eog"] = self.sos["slow"]
        self.z = {k: np.zeros((2, 2)) for k in self.sos}
        self.primed = False

    def run(self, name: str, x: np.ndarray) -> np.ndarray:
        sos, z = self.sos[name], self.z[name]
        if not self.primed:
            z = signal.sosfilt_zi(sos) * x[0]
        y, z = _sosfilt(sos, x[np.newaxis], z[:, np.newaxis, :])
        self.z[name] = z[:, 0, :]
        return y[0]


def _ref_features(eeg, eog, emg, sfreq, filters) -> np.ndarray:
    x = np.atleast_2d(np.asarray(eeg, dtype=np.float64))[0]
    freqs, seg_psd = _ref_welch(x, sfreq)
    psd = seg_psd.mean(axis=0)
    df = freqs[1] - freqs[0]
    sel = (freqs >= 0.5) & (freqs < 24.0)
    p = psd[sel]
    fs = freqs[sel]
    total = p.sum() * df + 1e-12
    out = [math.log10(total)]
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
    seg_tot = seg_psd[:, (freqs >= 0.5) & (freqs < 24.0)].sum(axis=1) * df + 1e-12
    out.append(float(np.std(np.log10(seg_tot))))
    slow = filters.run("slow", x)
    out.append(float(np.mean(np.abs(slow) > 37.5)))
    out.append(_ref_envelope_index(filters.run("sigma", x), sfreq))
    if eog is not None:
        eslow = filters.run("eog", np.asarray(eog, dtype=np.float64))
        pe = float(np.mean(eslow**2)) + 1e-9
        ps = float(np.mean(slow**2)) + 1e-9
        out.append(math.log10(pe))
        out.append(math.log10(pe / ps))
        c = np.corrcoef(eslow, slow)[0, 1] if np.std(eslow) > 0 and np.std(slow) > 0 else 0.0
        out.append(float(c))
    if emg is not None:
        m = filters.run("emg", np.asarray(emg, dtype=np.float64))
        out.append(math.log10(float(np.mean(m**2)) + 1e-9))
        out.append(_ref_envelope_index(m, sfreq))
    filters.primed = True
    return np.asarray(out)


def _quiet_ref(*args) -> np.ndarray:
    # Degenerate inputs (zeros, NaN) make the NumPy code warn; pytest turns warnings into
    # errors, and the values, not the warnings, are compared here.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _ref_features(*args)


def _signal(rng: np.random.Generator, n: int, sfreq: float, scale: float) -> np.ndarray:
    """Brown noise plus slow waves, alpha and spindle-band bursts (µV)."""
    t = np.arange(n) / sfreq
    x = np.cumsum(rng.standard_normal(n))
    x = (x - x.mean()) / (x.std() + 1e-12) * 20 + rng.standard_normal(n) * 5
    x += rng.uniform(0, 120) * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6))
    x += rng.uniform(0, 20) * np.sin(2 * np.pi * rng.uniform(8, 15) * t) * (t % 3 < 1)
    return x * scale


def _assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert same_numbers(a, b), np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))


# ---- the whole feature vector ---------------------------------------------------------------
@given(
    seed=st.integers(0, 2**32 - 1),
    sfreq=st.sampled_from([50.0, 100.0, 128.0, 200.0, 250.0, 256.0]),
    has_eog=st.booleans(),
    has_emg=st.booleans(),
    log_scale=st.floats(-3.0, 3.0),
    n_epochs=st.integers(1, 3),
)
def test_features_bit_identical(
    seed: int, sfreq: float, has_eog: bool, has_emg: bool, log_scale: float, n_epochs: int
) -> None:
    """Random epochs at several rates, channel sets and amplitudes, filters carried."""
    rng = np.random.default_rng(seed)
    n = round(30 * sfreq)
    fast, ref = staging._Filters(sfreq, has_eog), _RefFilters(sfreq)
    for _ in range(n_epochs):
        x = _signal(rng, n, sfreq, 10**log_scale)
        e = _signal(rng, n, sfreq, 10**log_scale) if has_eog else None
        m = rng.standard_normal(n) * 10 ** (log_scale + 0.5) if has_emg else None
        got = epoch_features(x, e, m, sfreq, fast)
        _assert_same(got, _quiet_ref(x, e, m, sfreq, ref))
        assert got.size == len(feature_names(has_eog, has_emg))
        # An epoch filtered alone (no carried state) too.
        _assert_same(epoch_features(x, e, m, sfreq), _quiet_ref(x, e, m, sfreq, _RefFilters(sfreq)))


@pytest.mark.parametrize(
    "case", ["zeros", "constant", "nan", "inf", "short", "tiny", "huge", "2d", "emg_shorter"]
)
def test_features_degenerate_inputs(case: str) -> None:
    """Flat, non-finite, short and multi-row inputs give what the NumPy code gives."""
    sf = 250.0
    rng = np.random.default_rng(5)
    x = _signal(rng, 7500, sf, 1.0)
    e = _signal(rng, 7500, sf, 1.0)
    m = rng.standard_normal(7500) * 10
    if case == "zeros":
        x, e, m = np.zeros(7500), np.zeros(7500), np.zeros(7500)
    elif case == "constant":
        x, e = np.full(7500, 3.3), np.full(7500, -0.7)
    elif case == "nan":
        x[1234] = np.nan
        m[10] = np.nan
    elif case == "inf":
        e[99] = np.inf
    elif case == "short":  # shorter than one window, and than four envelope windows
        x, e, m = x[:700], e[:700], m[:300]
    elif case == "tiny":
        x, e, m = x * 1e-12, e * 1e-12, m * 1e-300
    elif case == "huge":
        x, e, m = x * 1e140, e * 1e140, m * 1e150
    elif case == "2d":
        x = np.stack([x, e])
    elif case == "emg_shorter":
        m = m[:5000]
    _assert_same(
        epoch_features(x, e, m, sf, staging._Filters(sf, True)),
        _quiet_ref(x, e, m, sf, _RefFilters(sf)),
    )


# ---- the building blocks --------------------------------------------------------------------
@given(n=st.integers(0, 3000), lo=st.integers(0, 9), seed=st.integers(0, 2**32 - 1))
def test_sum_is_numpy_pairwise(n: int, lo: int, seed: int) -> None:
    """``_sum`` is ``np.sum`` bit for bit (pairwise blocks, halves, the 0.0 start)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(lo + n) * 10.0 ** rng.uniform(-8, 8, lo + n)
    assert same_numbers(staging._sum(a, lo, n), np.sum(a[lo:]))
    assert math.copysign(1.0, staging._sum(np.array([-0.0]), 0, 1)) == 1.0  # as np.sum


@given(m=st.integers(4, 200), seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_envelope_ratio_is_numpy_percentile_over_median(m: int, seed: int, ties: bool) -> None:
    """Linear-interpolated 95th percentile over the median, as ``np.percentile``."""
    rng = np.random.default_rng(seed)
    n_win = int(rng.integers(1, 130))
    y = rng.standard_normal(m * n_win + int(rng.integers(0, n_win)))
    if ties:
        y = np.round(y)
    rms = np.sqrt(np.mean(y[: m * n_win].reshape(m, n_win) ** 2, axis=1)) + 1e-9
    assert same_numbers(staging._envelope_ratio(y, n_win), np.percentile(rms, 95) / np.median(rms))


@pytest.mark.parametrize("sfreq", [50.0, 250.0])
def test_bandpass_is_scipy_sosfilt(sfreq: float) -> None:
    """The compiled cascades equal scipy's sosfilt, output and carried state."""
    rng = np.random.default_rng(1)
    f = staging._Filters(sfreq, True)
    for sos in (f.sos_slow, f.sos_sigma, f.sos_emg):
        z0 = rng.standard_normal((2, 2))
        x = rng.standard_normal(3000) * 50
        sos = sos.copy()  # the shared designs are read-only; scipy wants writable buffers
        y_ref, z_ref = _sosfilt(sos, x[None], z0[:, None, :])
        z = z0.copy()
        assert same_numbers(staging._bandpass(sos, z, x), y_ref[0])
        assert same_numbers(z, z_ref[:, 0, :])
        za, zb = z0.copy(), z0.copy()
        ya, yb = staging._bandpass_pair(sos, za, x, sos, zb, x[::-1].copy())
        assert same_numbers(ya, y_ref[0]) and same_numbers(za, z_ref[:, 0, :])
        assert same_numbers(yb, _sosfilt(sos, x[None, ::-1], z0[:, None, :])[0][0])


def test_compiled_log10_is_libm() -> None:
    """The kernels' scalar log10 is the one Python's ``math`` uses (libm)."""

    @numba.njit
    def logs(a: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        for i in range(a.size):
            out[i] = math.log10(a[i])
        return out

    a = 10.0 ** np.random.default_rng(0).uniform(-300, 300, 20000)
    assert same_numbers(logs(a), np.array([math.log10(v) for v in a]))


def test_running_norm_matches_formula() -> None:
    """Cached statistics give the z-scores of the formula after every update."""
    rng = np.random.default_rng(2)
    m0, v0 = rng.standard_normal(7), rng.uniform(0.1, 3, 7)
    rn = RunningNorm(m0, v0, 20.0)
    s, q = np.zeros(7), np.zeros(7)
    for n in range(1, 40):
        x = rng.standard_normal(7) * 3
        rn.update(x)
        s += x
        q += x * x
        for y in (x, rng.standard_normal(7)):
            d = 20.0 + n
            mean = (20.0 * m0 + s) / d
            var = (20.0 * (v0 + m0**2) + q) / d - mean**2
            ref = (y - mean) / np.sqrt(np.maximum(var, 1e-3 * v0 + 1e-12))
            assert same_numbers(rn.z(y), ref)


@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 5e-324, 1.7976931348623157e308]),
        ),
        max_size=40,
    )
)
def test_all_finite_is_numpy(values: list[float]) -> None:
    """The exponent-bit test is ``np.all(np.isfinite(a))``."""
    a = np.array(values, dtype=np.float64)
    assert staging._all_finite(a) == bool(np.all(np.isfinite(a)))


def test_same_numbers_off_the_exact_platform_still_catches_differences(monkeypatch) -> None:
    """Elsewhere than x86-64 Linux the comparison allows rounding, not real differences."""
    import conftest

    monkeypatch.setattr(conftest, "BIT_EXACT_PLATFORM", False)
    a = np.linspace(-50.0, 50.0, 101)
    assert conftest.same_numbers(a, a * (1 + 1e-15))
    assert not conftest.same_numbers(a, a * (1 + 1e-9))
    assert not conftest.same_numbers(a.astype(np.float32), a)
    assert conftest.same_numbers(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))

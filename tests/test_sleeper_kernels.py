"""The virtual sleeper's numba kernels and shortcuts against the NumPy code they replace.

Each kernel must give the same bits as the NumPy expressions (the samples of a seed may
not change), signed zeros included, on the platform where that was verified (see
``conftest.same_numbers``); the references below are those expressions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import same_numbers

from sim import sleeper

SEEDS = range(25)


@pytest.fixture(scope="module")
def sl() -> sleeper.VirtualSleeper:
    return sleeper.VirtualSleeper(seed=3, hours=0.5)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return same_numbers(a, b, signed_zeros=True)


def test_noise_spectrum_and_rows(sl: sleeper.VirtualSleeper) -> None:
    n, ne, na, n2 = sl._n, sl._nb_eeg, sl._nb_acc, sl._nb_fpz
    nb = n // 2 + 1
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        raw = rng.random(2 * (ne + n2 + nb + na), dtype=np.float32)
        raw[rng.integers(0, raw.size, 200)] = 0.5  # exact zeros once centred
        stage = sleeper.STAGES[seed % 5]
        gv = np.exp(rng.normal(0.0, 0.3, 3))
        emg = float(rng.uniform(1.0, 20.0))
        z = raw.copy().view(np.complex64)
        z -= np.complex64(0.5 + 0.5j)
        z1, z2, z3, z4 = z[:ne], z[ne : ne + n2], z[ne + n2 : ne + n2 + nb], z[ne + n2 + nb :]
        g = 1.0 + (gv[0] - 1.0) * sl._m_delta + (gv[1] - 1.0) * sl._m_alpha
        g += (gv[2] - 1.0) * sl._m_beta
        g = g.astype(np.float32)
        ref = np.zeros((4, nb), np.complex64)
        np.multiply(sl._amp_c4[stage] * g, z1, out=ref[0, :ne])
        zf = z1.copy()
        zf[:n2] *= np.float32(0.75)
        zf[:n2] += np.float32(0.66) * z2
        np.multiply(sl._amp_fz[stage] * g, zf, out=ref[1, :ne])
        np.multiply(sl._amp_emg * np.float32(emg), z3, out=ref[2])
        np.multiply(sl._amp_acc, z4, out=ref[3, :na])
        spec = np.full((4, nb), np.nan, np.complex64)
        sleeper._noise_spectrum(
            raw.view(np.complex64), ne, n2, nb, sl._amp_c4[stage], sl._amp_fz[stage],
            sl._band_masks, np.array(gv) - 1.0, sl._amp_emg, np.float32(emg), sl._amp_acc, spec,
        )  # fmt: skip
        assert _same(spec, ref)

        x = rng.standard_normal((4, n)).astype(np.float32)
        m2, gain = 2 * sl._m, np.float32(0.02 / emg)
        out = np.empty((6, n), np.float32)
        out[0], out[1] = x[0], x[1]
        np.multiply(x[1], np.float32(0.6), out=out[2])
        np.multiply(x[1], np.float32(0.03), out=out[3])
        out[3] += x[2]
        np.multiply(x[2], gain, out=out[4])
        out[5] = x[3]
        out[:, :m2] *= sl._win_up
        out[:, -m2:] *= sl._win_down
        assert _same(sleeper._noise_rows(x, gain, sl._win_up, sl._win_down), out)


def test_combine_tile(sl: sleeper.VirtualSleeper) -> None:
    t, m, spill = sl.tile_len, sl._m, sl._spill
    rng = np.random.default_rng(0)
    noise = [rng.standard_normal((6, sl._n)).astype(np.float32) for _ in range(3)]
    ev = [rng.standard_normal((6, sl._ev_len)).astype(np.float32) for _ in range(3)]
    ecg = rng.standard_normal(t).astype(np.float32)
    for has_prev in (False, True):
        for has_next in (False, True):
            ref = np.add(noise[1][:, m : m + t], ev[1][:, :t], dtype=np.float64)
            if has_prev:
                ref[:, :m] += noise[0][:, t + m :]
                ref[:, :spill] += ev[0][:, t:]
            if has_next:
                ref[:, t - m :] += noise[2][:, :m]
            ref[sleeper._ECG] += ecg
            ref[sleeper._CHIN] += 4.0 * ecg
            ref *= sleeper._TO_OUT[:, None]
            out = np.empty((6, t))
            sleeper._combine_tile(
                out, noise[1], ev[1], m, noise[0], ev[0], m if has_prev else 0, noise[2],
                m if has_next else 0, ecg, sleeper._TO_OUT,
            )  # fmt: skip
            assert _same(out, ref)


def _ecg_numpy(sl: sleeper.VirtualSleeper, k: int, nm: tuple | None) -> np.ndarray:
    """The NumPy ECG of tile ``k``, with a nightmare's (hr, beats, extra beats) or not."""
    e0, e1, c = float(sl._hr_edge[k]), float(sl._hr_edge[k + 1]), float(sl._hr[k])
    b = sl._ecg_basis
    hr = e0 * b[0] + c * b[1] + e1 * b[2]
    beats = e0 * b[3] + c * b[4] + e1 * b[5]
    for cyc, amp in ((sl._resp_cycles[k], sl._rsa[k]), (sl._slow_cycles[k], sl._slow_amp[k])):
        if amp:
            sn, ic = sl._sinus(int(cyc))
            hr += float(amp) * sn
            beats += float(amp) * ic
    b0 = float(sl._beat0[k])
    if nm is not None:
        hr = hr + nm[0]
        beats = beats + nm[1]
        b0 += nm[2]
    beats += b0 - math.floor(b0)
    since = beats - np.floor(beats)
    since /= hr
    since *= sl.sfreq
    ecg = np.take(sl._ecg, since.astype(np.int32), mode="clip")
    ph = 2 * np.pi * sl.person.resp_hz * k * sleeper.EPOCH_S
    ecg += sl._wander[0] * math.cos(ph)
    ecg += sl._wander[1] * math.sin(ph)
    return ecg


def test_ecg_kernel(sl: sleeper.VirtualSleeper) -> None:
    rng = np.random.default_rng(1)
    for k in range(sl.n_epochs):
        assert _same(sl._ecg_tile(k), _ecg_numpy(sl, k, None))
        # A nightmare's excess (float64) switches the beat arithmetic to float64.
        t = sl._t_tile + k * sleeper.EPOCH_S
        nm_hr = 0.3 * np.clip((t - t[0]) / 12.0, 0.0, 1.0)
        nm_beats = np.cumsum(nm_hr) / sl.sfreq
        extra = float(rng.uniform(0.0, 50.0))
        sl._nightmares = [{}]  # makes _ecg_tile ask _nm_hr and _nm_beats_before
        sl._nm_hr = lambda *_, h=nm_hr, b=nm_beats: (h, b)  # type: ignore[method-assign]
        sl._nm_beats_before = lambda _, e=extra: e  # type: ignore[method-assign]
        try:
            assert _same(sl._ecg_tile(k), _ecg_numpy(sl, k, (nm_hr, nm_beats, extra)))
        finally:
            sl._nightmares = []
            del sl._nm_hr, sl._nm_beats_before


def test_so_trains_and_drawing(sl: sleeper.VirtualSleeper) -> None:
    lut = sl._so_lut
    to_idx = len(lut) / (2 * np.pi)
    for seed in range(200):
        k = seed % sl.n_epochs
        trains = sl._so_trains(np.random.default_rng(seed), k, "dense" if seed % 2 else "sparse")
        if not trains:
            continue
        kt, kph, ka = trains[:3]
        base = k * sleeper.EPOCH_S
        # Long ranges use NumPy's precomputed slopes, short ones its divisions.
        for i0, i1 in ((0, sl.tile_len), (100, 103), (5000, 5001), (2000, 2600)):
            ev = np.random.default_rng(seed).random((6, sl._ev_len)).astype(np.float32)
            ref = ev.copy()
            tt = sl._t_tile[i0:i1] + base
            amp = np.interp(tt, kt, ka, left=0.0, right=0.0)
            idx = (np.interp(tt, kt, kph) * to_idx).astype(np.int32)
            ref[:3, i0:i1] += sleeper._SO_ROWS * (amp * np.take(lut, idx, mode="wrap"))
            sleeper._add_so(
                ev, sl._t_tile, i0, i1, base, kt, ka, kph, to_idx, lut, sleeper._SO_ROWS
            )
            assert _same(ev, ref)


def test_so_knots() -> None:
    q = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    for seed in range(300):
        rng = np.random.default_rng(seed)
        n_max, base = 40, float(rng.integers(0, 900)) * sleeper.EPOCH_S
        periods = 1.0 / rng.uniform(0.6, 1.25, n_max)
        brk = rng.random(n_max) < (0.15 if seed % 2 else 0.6)
        gaps = np.where(brk, rng.exponential(0.8 if seed % 2 else 20.0, n_max), 0.0)
        amps = 50.0 * rng.uniform(0.4, 1.25, n_max)
        jitter = rng.uniform(0.85, 1.15, n_max)
        brk[0], gaps[0] = True, float(rng.uniform(0.0, 15.0))
        got = sleeper._so_knots(periods, brk, gaps, amps, jitter, sleeper.EPOCH_S, base)
        starts = np.cumsum(gaps + periods) - periods
        keep = int(np.searchsorted(starts + periods, sleeper.EPOCH_S, side="right"))
        assert got[0] == keep
        if keep == 0:
            continue
        st, pe, br = starts[:keep], periods[:keep], brk[:keep]
        cyc = amps[np.maximum.accumulate(np.where(br, np.arange(keep), 0))] * jitter[:keep]
        last = np.append(br[1:], True)
        ka = np.repeat(cyc[:, None], 5, axis=1)
        ka[br, 0] = 0.0
        ka[:, 4] = 0.0
        sel = np.ones((keep, 5), bool)
        sel[:, 4] = last
        kph = np.pi / 2 + 2 * np.pi * (np.arange(keep)[:, None] + q)
        ref = (
            (st[:, None] + pe[:, None] * q)[sel] + base,
            kph[sel],
            ka[sel],
            st + 0.75 * pe + base,
            cyc,
            np.stack([st[br], (st + pe)[last]], axis=1) + base,
        )
        for a, b in zip(got[1:], ref, strict=True):
            assert _same(a, b)


def test_add_wave() -> None:
    rng = np.random.default_rng(2)
    for i0 in (-40, 0, 17, 8200, 8249):
        w, w2 = rng.standard_normal(120), rng.standard_normal(120)
        a, a2 = float(rng.uniform(5, 50)), float(rng.uniform(-50, 50))
        ev = rng.standard_normal((6, 8250)).astype(np.float32)
        ref = ev.copy()
        for second in (False, True):
            ww = a * w + a2 * w2 if second else a * w
            j0, k0 = (-i0, 0) if i0 < 0 else (0, i0)
            nn = min(len(ww) - j0, ref.shape[1] - k0)
            ref[:3, k0 : k0 + nn] += sleeper._SPINDLE_ROWS * ww[j0 : j0 + nn]
            sleeper._add_wave(ev, sleeper._SPINDLE_ROWS, i0, a, w, a2 if second else 0.0,
                        w2 if second else np.zeros(0))  # fmt: skip
            assert _same(ev, ref)


def test_rng_shortcuts() -> None:
    """The cheaper draws take the same numbers from the stream as NumPy's own."""
    for seed in SEEDS:
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        for lo, hi in ((0, 28.0), (-0.8, 0.8), (60, 220), (0, 2 * np.pi)):
            assert same_numbers(sleeper._uniform(r1, lo, hi), r2.uniform(lo, hi))
        zn = r1.standard_normal(3)
        gv = [math.exp(0.15 * zn[0]), math.exp(0.2 * zn[1]), math.exp(0.15 * zn[2])]
        assert _same(np.array(gv), r2.lognormal(0.0, [0.15, 0.2, 0.15]))
        assert _same(sleeper._SIGNS[r1.integers(0, 2, 5)], r2.choice([-1.0, 1.0], 5))
        assert r1.random() == r2.random()

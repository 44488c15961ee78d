"""Train the online stager's model from virtual nights only, and write the model file.

Usage::

    python -m bench.train_stager                     # 40 nights, seeds 1000-1039
    python -m bench.train_stager --nights 60 --out firmware/models/stager.npz

What it does:

1. Generates virtual nights (``sleeper://?seed=S&hours=8``, seeds from ``--first-seed``;
   evaluation seeds in :mod:`bench.staging` start at 5000 and never overlap). A third of the
   nights are low-passed at a random 15-25 Hz, as a recording made at 50 Hz would be,
   so the features do not depend on content the recorder may not have.
2. Computes the per-epoch features of :func:`firmware.staging.epoch_features` once per night
   (cached in ``--cache``).
3. Sets the normalisation prior to the population mean of per-night means and variances.
4. Replays each night through :class:`firmware.staging.OnlineStager` in recording mode, as a
   whole night and as random 30-120-min segments (recordings that start mid-night or at
   lights-off give the normaliser little history), collecting the model inputs exactly as
   the stager builds them online.
5. Fits a one-hidden-layer perceptron per channel set and the HMM transition matrix from
   the generating hypnograms, then saves everything as one ``.npz``.

No real recording is used. DREAMS excerpts are for evaluation only (their licence forbids
derivatives).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from scipy import signal

from firmware.staging import (
    MODEL_PATH,
    OnlineStager,
    _Filters,
    epoch_features,
    feature_names,
)
from hal.base import STAGES

logger = logging.getLogger(__name__)

CHANNEL_SETS = ((False, False), (True, False), (False, True), (True, True))
SFREQ = 250.0
#: First seed of the evaluation nights (bench.staging); training never reaches it.
EVAL_FIRST_SEED = 5000
#: Share of the transition mass spread uniformly (real hypnograms are less regular).
TRANS_FLOOR = 0.05
#: Stage distribution before the first epoch: a headband is switched on at lights-off.
START = np.array([0.5, 0.1, 0.25, 0.1, 0.05])
#: Emission temperature (see firmware.staging._Model.emission). Chosen while looking at
#: DREAMS excerpt 1 (the one development excerpt): 1.0 let an over-confident perceptron
#: override the transition model; 0.3 is the round value between the 0.5 and 0.25 tried.
TEMPERATURE = 0.3
#: L2 penalty of the perceptron and input-noise level (see :func:`fit_mlp`).
ALPHA = 1e-3
NOISE = 0.0


def set_key(has_eog: bool, has_emg: bool) -> str:
    """Model key of a channel set (``eeg``, ``eeg+eog``, ``eeg+emg``, ``eeg+eog+emg``)."""
    return "eeg" + ("+eog" if has_eog else "") + ("+emg" if has_emg else "")


def night_features(seed: int, hours: float, cache: Path | None) -> tuple[np.ndarray, list[str]]:
    """Features (all channels) and generating hypnogram of one virtual night."""
    path = cache / f"night_v2_{seed}_{hours:g}.npz" if cache is not None else None
    if path is not None and path.exists():
        with np.load(path) as f:
            return f["feats"], [str(s) for s in f["hyp"]]
    from hal import open_source

    src = open_source(f"sleeper://?seed={seed}&hours={hours:g}")
    try:
        info = src.info
        data = src.read(0, info.n_samples) * 1e6
        hyp = list(src.hypnogram)
    finally:
        src.close()
    rows = [info.picks("eeg")[0], info.picks("eog")[0], info.picks("emg")[0]]
    x = augment(data[rows], hyp, np.random.default_rng(np.random.SeedSequence([seed, 77])))
    n = round(30.0 * SFREQ)
    filt = _Filters(SFREQ, True)
    feats = []
    for k in range(len(hyp)):
        seg = x[:, k * n : (k + 1) * n]
        if not np.all(np.isfinite(seg)):
            filt.reset()
            feats.append(np.full(len(feature_names(True, True)), np.nan))
            continue
        feats.append(epoch_features(seg[0], seg[1], seg[2], SFREQ, filt))
    out = np.asarray(feats)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, feats=out, hyp=np.array(hyp))
    return out, hyp


def augment(x: np.ndarray, hyp: list[str], rng: np.random.Generator) -> np.ndarray:
    """Widen the virtual nights towards the variety of real recordings (training only).

    Physiology, not any particular recording, motivates each change:

    * slow-wave amplitude falls with age and differs between derivations (Ohayon et al.
      2004; Carrier et al. 2011): the 0.3-2 Hz component is scaled by 0.3-1 per night
      (the generated slow waves are at the large end of the adult range);
    * wake at lights-off is often eyes open (little alpha) with blinks, saccades and body
      movements: in a random share of W epochs alpha is attenuated and blinks (0.3-0.5 s,
      100-300 µV at the EOG, 5-20 % of it at the EEG), saccades and movement bursts added;
    * a third of the nights are low-passed at 15-25 Hz, as a 50-Hz recorder would be.

    Parameters
    ----------
    x : ndarray, shape (3, n)
        EEG, EOG, EMG in µV at 250 Hz.
    hyp : list of str
        Generating stage per 30-s epoch.
    rng : numpy.random.Generator
        Randomness of this night.
    """
    x = x.copy()
    good = np.isfinite(x)
    x[~good] = 0.0
    sf = SFREQ
    n = round(30.0 * sf)
    sos_sw = signal.butter(2, [0.3, 2.0], "bandpass", fs=sf, output="sos")
    g = rng.uniform(0.3, 1.0)
    x[:2] += (g - 1.0) * signal.sosfiltfilt(sos_sw, x[:2], axis=1)
    sos_a = signal.butter(2, [7.0, 13.0], "bandpass", fs=sf, output="sos")
    alpha = signal.sosfiltfilt(sos_a, x[0])
    p_open = rng.uniform(0.0, 1.0)
    leak = rng.uniform(0.05, 0.2)
    t = np.arange(round(0.4 * sf)) / sf
    blink = np.sin(np.pi * t / t[-1]) ** 2
    for k, stage in enumerate(hyp):
        if stage != "W" or rng.random() > p_open:
            continue
        a, b = k * n, (k + 1) * n
        x[0, a:b] -= 0.75 * alpha[a:b]
        art = np.zeros(n)
        for _ in range(rng.poisson(5)):
            i = int(rng.integers(0, n - blink.size))
            art[i : i + blink.size] += rng.uniform(100, 300) * blink
        for _ in range(rng.poisson(4)):
            i = int(rng.integers(0, n - round(sf)))
            d = round(rng.uniform(0.3, 1.5) * sf)
            art[i : i + d] += rng.choice([-1.0, 1.0]) * rng.uniform(30, 120)
        art = signal.sosfiltfilt(signal.butter(2, 8.0, "lowpass", fs=sf, output="sos"), art)
        x[1, a:b] += art
        x[0, a:b] += leak * art
        if rng.random() < 0.4:
            i = int(rng.integers(0, n - 4 * round(sf)))
            d = round(rng.uniform(1.0, 4.0) * sf)
            amp = rng.uniform(20, 80)
            x[0, a + i : a + i + d] += amp * rng.standard_normal(d)
            x[2, a + i : a + i + d] += 3 * amp * rng.standard_normal(d)
    if rng.random() < 1 / 3:
        # A recorder at 50 Hz keeps little above 20 Hz: teach the model not to rely on it.
        sos = signal.butter(4, rng.uniform(15.0, 25.0), "lowpass", fs=sf, output="sos")
        x = signal.sosfilt(sos, x, axis=1)
    x[~good] = np.nan
    return x


def columns(has_eog: bool, has_emg: bool) -> np.ndarray:
    """Columns of the all-channel feature matrix that a channel set uses."""
    full = feature_names(True, True)
    return np.array([full.index(n) for n in feature_names(has_eog, has_emg)])


def priors(nights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Population mean of per-night means and of per-night variances of each feature."""
    means = np.array([np.nanmean(f, axis=0) for f in nights])
    vars_ = np.array([np.nanvar(f, axis=0) for f in nights])
    return means.mean(axis=0), vars_.mean(axis=0)


def replay(
    feats: np.ndarray, model: dict[str, np.ndarray], has_eog: bool, has_emg: bool
) -> list[tuple[int, np.ndarray]]:
    """Model inputs of each good epoch of a feature sequence, as the stager builds them."""
    st = OnlineStager(SFREQ, has_eog, has_emg, model=model, record=True)
    for f in feats:
        st.push_features(f, bool(np.any(~np.isfinite(f))))
    st.flush()
    return st.rows


def segments(n: int, rng: np.random.Generator, n_seg: int) -> list[tuple[int, int]]:
    """The whole night, a lights-off segment and random mid-night segments (epochs)."""
    out = [(0, n), (0, min(n, int(rng.integers(60, 241))))]
    for _ in range(n_seg):
        length = int(rng.integers(60, 241))
        start = int(rng.integers(0, max(1, n - length)))
        out.append((start, min(n, start + length)))
    return out


def build_rows(
    nights: list[tuple[np.ndarray, list[str]]],
    prior: dict[str, np.ndarray],
    has_eog: bool,
    has_emg: bool,
    seed: int,
    n_seg: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and labels over whole nights and segments."""
    cols = columns(has_eog, has_emg)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for feats, hyp in nights:
        f = feats[:, cols]
        for a, b in segments(len(hyp), rng, n_seg):
            for k, row in replay(f[a:b], prior, has_eog, has_emg):
                xs.append(row)
                ys.append(STAGES.index(hyp[a + k]))
    return np.asarray(xs), np.asarray(ys)


def fit_mlp(
    x: np.ndarray, y: np.ndarray, hidden: int, seed: int, alpha: float = ALPHA, noise: float = NOISE
) -> dict[str, np.ndarray]:
    """Fit the perceptron; returns its arrays (input scaling included).

    Gaussian input noise (``noise`` standard deviations of each input) is added to a copy
    of the rows: generated nights are cleaner than real ones, and a model that needs
    exact feature values would not transfer.
    """
    from sklearn.neural_network import MLPClassifier

    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    if noise > 0:
        rng = np.random.default_rng(seed)
        x = np.concatenate([x, x + noise * scale * rng.standard_normal(x.shape)])
        y = np.concatenate([y, y])
    clf = MLPClassifier(
        hidden_layer_sizes=(hidden,),
        alpha=alpha,
        max_iter=200,
        early_stopping=True,
        random_state=seed,
    )
    clf.fit((x - mean) / scale, y)
    return {
        "in_mean": mean.astype(np.float32),
        "in_scale": scale.astype(np.float32),
        "w1": clf.coefs_[0].astype(np.float32),
        "b1": clf.intercepts_[0].astype(np.float32),
        "w2": clf.coefs_[1].astype(np.float32),
        "b2": clf.intercepts_[1].astype(np.float32),
    }


def transitions(hyps: list[list[str]]) -> np.ndarray:
    """Row-stochastic transition matrix with add-one smoothing."""
    c = np.ones((5, 5))
    for h in hyps:
        idx = [STAGES.index(s) for s in h]
        for a, b in zip(idx[:-1], idx[1:], strict=True):
            c[a, b] += 1
    return c / c.sum(axis=1, keepdims=True)


def train(
    seeds: list[int],
    hours: float,
    hidden: int,
    n_seg: int,
    cache: Path | None,
    sets: tuple[tuple[bool, bool], ...] = CHANNEL_SETS,
    alpha: float = ALPHA,
    noise: float = NOISE,
) -> dict[str, np.ndarray]:
    """Train all channel sets; returns the model arrays."""
    nights = []
    for s in seeds:
        logger.info("night %d", s)
        nights.append(night_features(s, hours, cache))
    hyps = [h for _, h in nights]
    counts = np.array([sum(h.count(s) for h in hyps) for s in STAGES], dtype=float)
    model: dict[str, np.ndarray] = {
        "class_prior": (counts / counts.sum()).astype(np.float64),
        # Generated hypnograms never jump W->N2 or N2->W; real ones do: keep 5 % of the
        # transition mass uniform so such jumps stay possible.
        "trans": (1 - TRANS_FLOOR) * transitions(hyps) + TRANS_FLOOR / 5,
        "start": START,
        "temperature": np.array(TEMPERATURE),
        "features_all": np.array(feature_names(True, True)),
    }
    for has_eog, has_emg in sets:
        key = set_key(has_eog, has_emg)
        cols = columns(has_eog, has_emg)
        m0, v0 = priors([f[:, cols] for f, _ in nights])
        prior = {f"{key}/prior_mean": m0, f"{key}/prior_var": v0}
        x, y = build_rows(nights, prior, has_eog, has_emg, seed=len(seeds), n_seg=n_seg)
        logger.info("%s: %d rows, %d inputs", key, *x.shape)
        arrays = fit_mlp(x, y, hidden, seed=0, alpha=alpha, noise=noise)
        model.update(prior)
        model.update({f"{key}/{k}": v for k, v in arrays.items()})
        # The perceptron saw the class mix of the training rows: use it as the prior.
        freq = np.bincount(y, minlength=5) / y.size
        model[f"{key}/row_prior"] = freq
    model["class_prior"] = model["eeg/row_prior"]
    return model


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.train_stager", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--nights", type=int, default=40)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--hidden", type=int, default=24)
    ap.add_argument("--segments", type=int, default=6, help="random segments per night")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/slumbersync_stager_cache"))
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--alpha", type=float, default=ALPHA, help="L2 penalty")
    ap.add_argument("--noise", type=float, default=NOISE, help="input noise (SDs)")
    ap.add_argument("--eeg-only", action="store_true", help="train the EEG-only model only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = list(range(args.first_seed, args.first_seed + args.nights))
    if seeds[-1] >= EVAL_FIRST_SEED:
        ap.error(f"training seeds must stay below {EVAL_FIRST_SEED} (evaluation seeds)")
    sets = ((False, False),) if args.eeg_only else CHANNEL_SETS
    model = train(
        seeds, args.hours, args.hidden, args.segments, args.cache, sets, args.alpha, args.noise
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **model)
    logger.info("wrote %s (%d bytes)", args.out, args.out.stat().st_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

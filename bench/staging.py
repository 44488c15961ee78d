"""Accuracy of the online stager against expert and generating hypnograms, beside YASA.

Usage::

    python -m bench.staging --dreams ../shared/data/dreams
    python -m bench.staging --recording night.edf --channel C3-A1 --hypnogram hyp.txt
    python -m bench.staging --virtual 3

For each recording the causal :class:`firmware.staging.OnlineStager` (250 Hz, each epoch
decided one epoch after it ends) and YASA's offline ``SleepStaging`` (the whole recording
in hand, resampled to 100 Hz) stage the same 30-s epochs; accuracy, Cohen's kappa and the
confusion matrix (rows expert, columns prediction, order W N1 N2 N3 R) are printed, and the
LAST line of the output is one JSON object with per-recording and pooled figures.

Expert hypnograms in the DREAMS (R&K) layout hold one score per 5 s (5 W, 4 REM, 3 S1,
2 S2, 1 S3, 0 S4, -1 movement, -2/-3 unknown): a 30-s epoch takes the most frequent of its
six scores (a tie goes to the score seen first), S3 and S4 are N3, and epochs whose
majority is movement or unknown are not scored. Other hypnogram files are read with
:func:`sim.hypnogram.read_hypnogram` (one stage per 30-s epoch).

Virtual nights use seeds from 5000 on; the model is trained on seeds 1000-1999
(:mod:`bench.train_stager`).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from bench._json import json_line
from firmware.staging import OnlineStager, score
from hal.base import STAGES, UserInputError

logger = logging.getLogger(__name__)

SFREQ = 250.0
EPOCH_S = 30.0
VIRTUAL_FIRST_SEED = 5000
_RK = {5: "W", 4: "R", 3: "N1", 2: "N2", 1: "N3", 0: "N3"}


@dataclass
class Recording:
    """One recording to stage: signals in µV at ``sfreq`` and the reference hypnogram."""

    name: str
    sfreq: float
    eeg: np.ndarray
    eog: np.ndarray | None
    emg: np.ndarray | None
    truth: list[str | None]


def resample(x: np.ndarray, sf_in: float, sf_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased)."""
    if sf_in == sf_out:
        return np.asarray(x, dtype=np.float64)
    fr = Fraction(sf_out / sf_in).limit_denominator(1000)
    return signal.resample_poly(
        np.asarray(x, dtype=np.float64), fr.numerator, fr.denominator, axis=-1
    )


def read_rk_hypnogram(path: Path) -> list[str | None]:
    """30-s stages from a 5-s R&K hypnogram (None for movement/unknown epochs)."""
    vals = []
    for tok in path.read_text().split():
        try:
            vals.append(int(float(tok)))
        except ValueError:
            continue  # the "[Hypnogram]" header
    out: list[str | None] = []
    for k in range(len(vals) // 6):
        top = Counter(vals[6 * k : 6 * k + 6]).most_common(1)[0][0]
        out.append(_RK.get(top))
    return out


def read_truth(path: Path) -> list[str | None]:
    """A hypnogram file: DREAMS R&K 5-s layout, or one stage per 30-s epoch."""
    head = path.read_text().lstrip()[:20]
    if head.startswith("[Hypnogram]"):
        return read_rk_hypnogram(path)
    from sim.hypnogram import read_hypnogram

    return list(read_hypnogram(path))


def read_txt_excerpt(path: Path, duration_s: float = 1800.0) -> tuple[np.ndarray, float, str]:
    """A DREAMS ``excerptN.txt``: samples (µV), rate, channel name (30 min per file)."""
    lines = path.read_text().split("\n")
    name = lines[0].strip().strip("[]")
    x = np.array([float(v) for v in lines[1:] if v.strip()])
    return x, x.size / duration_s, name


def dreams_recordings(folder: Path) -> list[Recording]:
    """The three DREAMS excerpts EEG-only, and excerpt 3 again with its EOG and EMG.

    The text excerpts hold µV by the database's definition. ``excerpt3.edf`` is loaded by
    the simulator's own loader (:func:`file_recording`), so its units and its resampling
    to the device rate are those of ``slumbersync simulate --recording
    'file:///.../excerpt3.edf?eog=EOG1-A1&emg=EMG1' --channel C3-A1 --min-sfreq 50``.
    """
    if not folder.is_dir():
        raise UserInputError(f"No such folder of DREAMS excerpts: {folder}")
    recs = []
    for i in (1, 3, 4):
        x, sf, ch = read_txt_excerpt(folder / f"excerpt{i}.txt")
        truth = read_rk_hypnogram(folder / f"Hypnogram_excerpt{i}.txt")
        recs.append(Recording(f"excerpt{i} {ch}", sf, x, None, None, truth))
    edf = folder / "excerpt3.edf"
    if edf.exists():
        rec = file_recording(
            edf, "C3-A1", folder / "Hypnogram_excerpt3.txt", eog="EOG1-A1", emg="EMG1"
        )
        rec.name = "excerpt3 C3-A1+EOG+EMG"
        recs.append(rec)
    return recs


def file_recording(
    path: Path,
    channel: str,
    hypnogram: Path,
    eog: str | None = None,
    emg: str | None = None,
) -> Recording:
    """Any recording MNE reads, through the simulator's loader, at the device rate.

    Parameters
    ----------
    path : Path
        The recording.
    channel : str
        Its EEG channel.
    hypnogram : Path
        The reference hypnogram (:func:`read_truth`).
    eog, emg : str, optional
        Auxiliary channels by name; default: found as the simulator finds them.

    Returns
    -------
    Recording
        Signals in µV at :data:`SFREQ`, as :mod:`hal.recording` reads them (units from
        the file header, gaps as NaN).

    Raises
    ------
    UserInputError
        Whatever the loader refuses (missing file, wrong channel, rate below 50 Hz...).
    """
    from hal import open_source

    # ecg=none: the stager does not use it, and loading it only costs time.
    src = open_source(
        str(path), channel=channel, eog=eog, emg=emg, ecg="none", sfreq=SFREQ, min_sfreq=50.0
    )
    try:
        info = src.info
        data = src.read(0, info.n_samples) * 1e6
    finally:
        src.close()
    eog_rows = info.picks("eog")
    emg_rows = info.picks("emg")
    return Recording(
        Path(path).name,
        info.sfreq,
        data[info.picks("eeg")[0]],
        data[eog_rows[0]] if eog_rows else None,
        data[emg_rows[0]] if emg_rows else None,
        read_truth(hypnogram),
    )


def virtual_recording(seed: int, hours: float) -> Recording:
    """A virtual night with its generating hypnogram."""
    from hal import open_source

    src = open_source(f"sleeper://?seed={seed}&hours={hours:g}")
    try:
        info = src.info
        data = src.read(0, info.n_samples) * 1e6
        hyp: list[str | None] = list(src.hypnogram)
    finally:
        src.close()
    return Recording(
        f"virtual seed={seed}",
        info.sfreq,
        data[info.picks("eeg")[0]],
        data[info.picks("eog")[0]],
        data[info.picks("emg")[0]],
        hyp,
    )


def run_stager(rec: Recording, use_aux: bool = True) -> list[str]:
    """Stage a recording causally at 250 Hz, one epoch at a time, as the device would."""
    eeg = resample(rec.eeg, rec.sfreq, SFREQ)
    eog = resample(rec.eog, rec.sfreq, SFREQ) if use_aux and rec.eog is not None else None
    emg = resample(rec.emg, rec.sfreq, SFREQ) if use_aux and rec.emg is not None else None
    st = OnlineStager(SFREQ, has_eog=eog is not None, has_emg=emg is not None)
    n = st.n_epoch
    out: list[str] = []
    for k in range(eeg.size // n):
        sl = slice(k * n, (k + 1) * n)
        e = eeg[sl]
        # The bench has no ADC quality monitor: flat or non-finite epochs are bad signal.
        bad = bool(not np.all(np.isfinite(e)) or np.std(e) < 0.5)
        for d in st.push_epoch(
            e, eog[sl] if eog is not None else None, emg[sl] if emg is not None else None, bad
        ):
            out.append(d.stage)
    out.extend(d.stage for d in st.flush())
    return out


def run_yasa(rec: Recording, use_aux: bool = True) -> list[str] | None:
    """YASA's offline staging at 100 Hz (None when the recording is under 5 min)."""
    import mne
    import yasa

    if rec.eeg.size / rec.sfreq < 300:
        return None
    names, rows = ["EEG"], [resample(rec.eeg, rec.sfreq, 100.0)]
    types = ["eeg"]
    if use_aux and rec.eog is not None:
        names.append("EOG")
        rows.append(resample(rec.eog, rec.sfreq, 100.0))
        types.append("eog")
    if use_aux and rec.emg is not None:
        names.append("EMG")
        rows.append(resample(rec.emg, rec.sfreq, 100.0))
        types.append("emg")
    n = min(r.size for r in rows)
    raw = mne.io.RawArray(
        np.array([r[:n] for r in rows]) * 1e-6,
        mne.create_info(names, 100.0, types),
        verbose="error",
    )
    ss = yasa.SleepStaging(
        raw,
        eeg_name="EEG",
        eog_name="EOG" if "EOG" in names else None,
        emg_name="EMG" if "EMG" in names else None,
    )
    pred = ss.predict()
    labels = pred.hypno.tolist() if hasattr(pred, "hypno") else list(pred)  # YASA >= 0.7
    return [{"WAKE": "W", "REM": "R"}.get(str(s), str(s)) for s in labels]


def _align(truth: list[str | None], pred: list[str]) -> tuple[list[str], list[str]]:
    n = min(len(truth), len(pred))
    pairs = [(t, p) for t, p in zip(truth[:n], pred[:n], strict=True) if t in STAGES]
    return [t for t, _ in pairs], [p for _, p in pairs]


def evaluate(rec: Recording, use_aux: bool, with_yasa: bool) -> dict[str, object]:
    """Scores of the online stager (and YASA) on one recording."""
    t0 = time.perf_counter()
    pred = run_stager(rec, use_aux)
    t1 = time.perf_counter()
    t, p = _align(rec.truth, pred)
    res: dict[str, object] = {"online": score(t, p), "online_s": round(t1 - t0, 2)}
    res["online"]["hypnogram"] = "".join(_short(s) for s in pred)  # type: ignore[index]
    if with_yasa:
        yp = run_yasa(rec, use_aux)
        if yp is not None:
            ty, py = _align(rec.truth, yp)
            res["yasa"] = score(ty, py)
            res["yasa"]["hypnogram"] = "".join(_short(s) for s in yp)  # type: ignore[index]
            res["yasa_s"] = round(time.perf_counter() - t1, 2)
    res["truth"] = "".join(_short(s) for s in rec.truth)
    return res


def _short(s: str | None) -> str:
    return {"W": "W", "N1": "1", "N2": "2", "N3": "3", "R": "R"}.get(s or "", ".")


def _pool(results: dict[str, dict], key: str, names: list[str]) -> dict[str, object]:
    cm = np.zeros((5, 5), dtype=int)
    for n in names:
        if key in results[n]:
            cm += np.array(results[n][key]["confusion"])
    t = [STAGES[i] for i in range(5) for j in range(5) for _ in range(cm[i, j])]
    p = [STAGES[j] for i in range(5) for j in range(5) for _ in range(cm[i, j])]
    return score(t, p)


def _print_table(results: dict[str, dict]) -> None:
    head = ("recording", "n", "online acc", "kappa", "YASA acc", "kappa")
    print("{:34s} {:>4s} {:>10s} {:>6s} {:>9s} {:>6s}".format(*head))
    for name, r in results.items():
        o = r["online"]
        y = r.get("yasa", {"accuracy": float("nan"), "kappa": float("nan")})
        print(
            f"{name:34s} {o['n']:4d} {o['accuracy']:10.3f} {o['kappa']:6.3f} "
            f"{y['accuracy']:9.3f} {y['kappa']:6.3f}"
        )


def _print_details(name: str, r: dict) -> None:
    print(f"\n== {name}")
    print(f"  truth  {r.get('truth', '')}")
    for key in ("online", "yasa"):
        if key in r:
            print(f"  {key:6s} {r[key]['hypnogram']}")
    for key in ("online", "yasa"):
        if key not in r:
            continue
        print(f"  {key} confusion (rows truth, cols pred: {' '.join(STAGES)})")
        for s, row in zip(STAGES, r[key]["confusion"], strict=True):
            print(f"    {s:3s}" + "".join(f"{v:5d}" for v in row))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.staging", description=__doc__.split("\n")[0])
    ap.add_argument("--dreams", type=Path, help="folder of the DREAMS excerpts")
    ap.add_argument("--recording", type=Path, help="any recording MNE reads")
    ap.add_argument("--channel", help="EEG channel of --recording")
    ap.add_argument("--hypnogram", type=Path, help="expert hypnogram of --recording")
    ap.add_argument("--virtual", type=int, default=0, help="number of virtual nights")
    ap.add_argument("--hours", type=float, default=8.0, help="length of virtual nights")
    ap.add_argument("--no-yasa", action="store_true", help="skip YASA")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with_yasa = not args.no_yasa
    results: dict[str, dict] = {}
    groups: dict[str, list[str]] = {}
    try:
        if args.dreams is not None:
            for rec in dreams_recordings(args.dreams):
                aux = rec.eog is not None
                results[rec.name] = evaluate(rec, aux, with_yasa)
                groups.setdefault("dreams_eeg" if not aux else "dreams_aux", []).append(rec.name)
        if args.recording is not None:
            if args.hypnogram is None or args.channel is None:
                ap.error("--recording needs --channel and --hypnogram")
            rec = file_recording(args.recording, args.channel, args.hypnogram)
            results[rec.name] = evaluate(rec, True, with_yasa)
            groups.setdefault("recording", []).append(rec.name)
        for i in range(args.virtual):
            rec = virtual_recording(VIRTUAL_FIRST_SEED + i, args.hours)
            results[rec.name] = evaluate(rec, True, with_yasa)
            groups.setdefault("virtual", []).append(rec.name)
    except (UserInputError, OSError) as err:
        # A missing file or a recording the loader refuses: one line, no traceback.
        raise SystemExit(f"bench.staging: error: {err}") from None
    if not results:
        ap.error("nothing to evaluate: give --dreams, --recording or --virtual")
    for name, r in results.items():
        _print_details(name, r)
    print()
    _print_table(results)
    pooled = {}
    for g, names in groups.items():
        keys = [k for k in ("online", "yasa") if any(k in results[n] for n in names)]
        pooled[g] = {k: _pool(results, k, names) for k in keys}
        o = pooled[g]["online"]
        y = pooled[g].get("yasa", {"accuracy": float("nan"), "kappa": float("nan")})
        print(
            f"{'pooled ' + g:34s} {o['n']:4d} {o['accuracy']:10.3f} {o['kappa']:6.3f} "
            f"{y['accuracy']:9.3f} {y['kappa']:6.3f}"
        )
    slim = {
        n: {
            k: {m: r[k][m] for m in ("n", "accuracy", "kappa", "confusion")}
            for k in ("online", "yasa")
            if k in r
        }
        for n, r in results.items()
    }
    print(json_line({"recordings": slim, "pooled": pooled}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmarks' command lines: how they load recordings, their JSON line, their help."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import slow_wave_eeg

import bench
from bench import phase, staging
from bench._json import json_line, strict
from firmware.phase import Candidate
from hal.recording import RecordingSource

DREAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreams"
BENCHES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def strict_loads(line: str) -> object:
    """``json.loads`` that refuses NaN and Infinity, as every other JSON parser does."""

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def uppercase_uv_edf(path: Path, seconds: float = 60.0) -> tuple[Path, np.ndarray]:
    """An EDF whose header says ``UV`` (as the DREAMS recorder writes), and its volts.

    MNE matches the unit with its case, so alone it reads these microvolts as volts.
    """
    pytest.importorskip("edfio")
    sfreq = 100.0
    t = np.arange(round(seconds * sfreq)) / sfreq
    rng = np.random.default_rng(0)
    volts = np.vstack(
        [
            40e-6 * np.sin(2 * np.pi * 1.0 * t) + 2e-6 * rng.standard_normal(t.size),
            20e-6 * np.sin(2 * np.pi * 7.0 * t),
        ]
    )
    raw = mne.io.RawArray(volts, mne.create_info(["C3-A1", "EOG1"], sfreq, "eeg"), verbose=False)
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose=False)
    blob = bytearray(path.read_bytes())
    n_signals = int(blob[252:256])
    start = 256 + 96 * n_signals
    units = [bytes(blob[start + 8 * i : start + 8 * i + 8]).strip() for i in range(n_signals)]
    assert units.count(b"uV") == 2  # (MNE adds an "EDF Annotations" signal, without unit)
    for i, unit in enumerate(units):
        if unit == b"uV":
            blob[start + 8 * i : start + 8 * i + 2] = b"UV"
    path.write_bytes(bytes(blob))
    return path, volts


def test_phase_reads_an_uppercase_uv_edf_in_microvolts(tmp_path: Path) -> None:
    path, volts = uppercase_uv_edf(tmp_path / "upper.edf")
    rec = phase.load_recording(path, "C3-A1", None, None)
    # 60 s at the device rate, tens of microvolts (not 10^6 times more).
    assert rec.x_uv.size == 60 * 250
    assert 35.0 < np.percentile(np.abs(rec.x_uv), 99) < 50.0
    # The simulator's own loader, sample for sample.
    with RecordingSource.from_path(path, channel="C3-A1", min_sfreq=0, eog=False) as src:
        np.testing.assert_array_equal(rec.x_uv, src.read(0, src.info.n_samples)[0] * 1e6)
    # The no-hypnogram default still covers the whole recording (two 30-s epochs).
    assert list(rec.stages) == ["N2", "N2"] and rec.stage_len_s == 30.0


def test_phase_names_the_channels_when_the_channel_is_wrong(tmp_path: Path) -> None:
    path, _ = uppercase_uv_edf(tmp_path / "upper.edf")
    with pytest.raises(SystemExit, match=r"'C3' not found.*'C3-A1'"):
        phase.load_recording(path, "C3", None, None)


@pytest.mark.skipif(not DREAMS.is_dir(), reason="DREAMS excerpts not available")
def test_phase_on_dreams_excerpt3_edf_delivers(capsys: pytest.CaptureFixture[str]) -> None:
    """excerpt3.edf writes "UV" in its header: read as volts, no wave ever crossed a gate."""
    argv = [
        "--recording",
        str(DREAMS / "excerpt3.edf"),
        "--channel",
        "C3-A1",
        "--hypnogram",
        str(DREAMS / "Hypnogram_excerpt3.txt"),
        "--estimators",
        "echt",
    ]
    assert phase.main(argv) == 0
    result = strict_loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = result["estimators"]["echt"]["excerpt3"]
    # The README gives 50 for excerpt 3 (its text file): the EDF holds the same EEG.
    assert 40 <= metrics["n"] <= 60
    assert abs(metrics["mean_deg"]) < 30


def test_phase_json_line_is_strict_without_a_stimulus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = uppercase_uv_edf(tmp_path / "awake.edf")
    hypnogram = tmp_path / "hypnogram.csv"
    hypnogram.write_text("epoch_start_s,stage\n0,W\n30,W\n")
    argv = ["--recording", str(path), "--channel", "C3-A1", "--hypnogram", str(hypnogram)]
    assert phase.main([*argv, "--gate", "expert", "--estimators", "echt,ngo"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = strict_loads(line)
    for name in ("echt", "ngo"):
        for row in ("awake", "pooled"):
            m = result["estimators"][name][row]
            # No stimulus, no minute of N2/N3: the metrics without a value are null.
            assert m["n"] == 0 and m["mean_deg"] is None and m["per_min_n2n3"] is None


#: The gap of :func:`gap_fif`, seconds.
GAP = (300.0, 310.0)


def gap_fif(path: Path, gap: tuple[float, float] | None = GAP) -> Path:
    """Ten minutes of slow waves at 100 Hz in a FIF, NaN over ``gap`` (a lost stretch)."""
    sfreq = 100.0
    x = slow_wave_eeg(600.0, sfreq, seed=1)
    if gap is not None:
        x[round(gap[0] * sfreq) : round(gap[1] * sfreq)] = np.nan
    raw = mne.io.RawArray(x[np.newaxis], mne.create_info(["C3"], sfreq, "eeg"), verbose=False)
    raw.save(path, overwrite=True, verbose=False)
    return path


def phase_json(path: Path, capsys: pytest.CaptureFixture[str], *options: str) -> dict:
    """bench.phase's JSON line for one recording (no hypnogram: all of it is N2/N3)."""
    assert phase.main(["--recording", str(path), "--channel", "C3", *options]) == 0
    result = strict_loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_referee_phase_is_undefined_only_near_a_gap() -> None:
    x = slow_wave_eeg(300.0, 250.0, seed=2) * 1e6
    gapped = x.copy()
    gapped[round(150 * 250) : round(155 * 250)] = np.nan
    truth = phase.ground_truth_phase(x, 250.0)
    got = phase.referee_phase(gapped, 250.0)
    # No phase in the gap and within the margin of it, a phase everywhere else.
    margin = round(phase.REFEREE_MARGIN_S * 250)
    undefined = np.zeros(x.size, dtype=bool)
    undefined[round(150 * 250) - margin : round(155 * 250) + margin] = True
    np.testing.assert_array_equal(np.isnan(got), undefined)
    # Outside the margin the gap costs the referee no more than a few degrees.
    error = np.abs((got[~undefined] - truth[~undefined] + 180) % 360 - 180)
    assert error.max() < 5
    # Without a gap it is the referee itself, bit for bit.
    np.testing.assert_array_equal(phase.referee_phase(x, 250.0), truth)


def test_phase_gate_takes_a_gap_for_bad_signal() -> None:
    x = np.zeros(round(60 * 250))
    x[round(30 * 250) : round(31 * 250)] = np.nan  # lead-off to the ADC: withholds to 36 s
    ok = np.ones(x.size, dtype=bool)
    cands = [Candidate(d, d + 20, -50.0, 1.0, -20.0) for d in (7 * 250, 33 * 250, 40 * 250)]
    kept = phase.gate(cands, x, ok)
    assert [c.decision_index for c in kept] == [7 * 250, 40 * 250]


@pytest.mark.parametrize("gate", ["expert", "online"])
def test_phase_excludes_onsets_near_a_nan_gap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gate: str
) -> None:
    """A gap costs its own seconds: the rest of the night is measured, and counted right."""
    estimators = "echt,pll,ngo" if gate == "expert" else "echt"
    options = ("--gate", gate, "--estimators", estimators)
    clean = phase_json(gap_fif(tmp_path / "clean_raw.fif", gap=None), capsys, *options)
    gapped = phase_json(gap_fif(tmp_path / "gap_raw.fif"), capsys, *options)
    for name in estimators.split(","):
        c, g = clean["estimators"][name]["clean_raw"], gapped["estimators"][name]["gap_raw"]
        # The estimators go on after the gap (a NaN fed to a filter would stop them) ...
        assert g["n"] >= 0.9 * c["n"], (name, c, g)
        # ... and the statistics are those of the rest of the night, not NaN or poisoned.
        assert g["mean_deg"] == pytest.approx(c["mean_deg"], abs=3), (name, c, g)
        assert g["R"] == pytest.approx(c["R"], abs=0.02), (name, c, g)
        assert g["within_90"] == pytest.approx(c["within_90"], abs=0.02), (name, c, g)
        # The onsets just before the gap have no referee phase: left out, and said so.
        assert g["n_excluded"] >= 1, (name, g)
        assert g["gap_s"] == pytest.approx(GAP[1] - GAP[0], abs=0.05)
        assert c["n_excluded"] == 0 and c["gap_s"] == 0
        pooled = gapped["estimators"][name]["pooled"]
        assert pooled["n_excluded"] == g["n_excluded"] and pooled["gap_s"] == g["gap_s"]


def test_phase_text_recording_keeps_its_gap_in_place(tmp_path: Path) -> None:
    x = slow_wave_eeg(120.0, 100.0, seed=3) * 1e6
    x[4000:4100] = np.nan  # 40 s .. 41 s
    path = tmp_path / "night.txt"
    path.write_text("[C3-A1]\n" + "\n".join(f"{v:.3f}" for v in x) + "\n")
    rec = phase.load_recording(path, None, None, 100.0)
    assert rec.x_uv.size == 120 * 250
    gap = np.flatnonzero(np.isnan(rec.x_uv))
    # The resampler's filter does not carry the NaN beyond the samples next to the gap.
    assert gap.min() >= 40 * 250 - 3 and gap.max() <= 41 * 250 + 3
    assert gap.size == gap.max() - gap.min() + 1


def test_phase_bad_hypnogram_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = gap_fif(tmp_path / "night_raw.fif", gap=None)
    argv = ["--recording", str(path), "--channel", "C3"]
    with pytest.raises(SystemExit, match=r"^bench\.phase: error: .*missing\.txt"):
        phase.main([*argv, "--hypnogram", str(tmp_path / "missing.txt")])
    odd = tmp_path / "odd.txt"
    odd.write_text("[Hypnogram]\n2\n9\n")
    with pytest.raises(SystemExit, match=r"^bench\.phase: error: .*odd\.txt: not a DREAMS"):
        phase.main([*argv, "--hypnogram", str(odd)])


def test_staging_missing_dreams_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^bench\.staging: error: .*no-such-folder"):
        staging.main(["--dreams", str(tmp_path / "no-such-folder"), "--no-yasa"])


@pytest.mark.skipif(not DREAMS.is_dir(), reason="DREAMS excerpts not available")
def test_staging_reads_the_dreams_edf_as_the_simulator_does() -> None:
    """excerpt3.edf as the simulator reads it (``file://.../excerpt3.edf?eog=EOG1-A1&emg=EMG1``
    with ``--channel C3-A1 --min-sfreq 50``): its units, its rate, sample for sample."""
    rec = staging.dreams_recordings(DREAMS)[-1]
    assert rec.name == "excerpt3 C3-A1+EOG+EMG" and rec.sfreq == 250.0
    with RecordingSource.from_path(
        DREAMS / "excerpt3.edf", channel="C3-A1", eog="EOG1-A1", emg="EMG1", min_sfreq=50
    ) as src:
        volts = src.read(0, src.info.n_samples)
    for row, x in enumerate((rec.eeg, rec.eog, rec.emg)):
        np.testing.assert_array_equal(x, volts[row] * 1e6)


def test_json_line_writes_null_for_non_finite_numbers() -> None:
    obj = {
        "nan": float("nan"),
        "inf": [math.inf, -math.inf, np.float32("nan")],
        "numpy": (np.int64(3), np.float64(2.5), np.bool_(True)),
        "array": np.array([1.0, np.nan]),
        "text": "NaN",
        "none": None,
    }
    want = {
        "nan": None,
        "inf": [None, None, None],
        "numpy": [3, 2.5, True],
        "array": [1.0, None],
        "text": "NaN",
        "none": None,
    }
    assert strict(obj) == want
    assert strict_loads(json_line(obj)) == want
    assert json_line({"a": 1}, separators=(",", ":")) == '{"a":1}'


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_writes_its_json_line_through_the_strict_helper(name: str) -> None:
    source = (Path(bench.__path__[0]) / f"{name}.py").read_text(encoding="utf-8")
    assert "json.dumps" not in source and "json.dump(" not in source


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_help_names_the_module_to_run(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m bench.{name} ")

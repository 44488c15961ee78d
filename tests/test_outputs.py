"""The run outputs of sim.outputs: exact session.fif samples, the analysis worker, errors."""

from __future__ import annotations

import copy
import datetime
import json

import mne
import numpy as np
import pytest
from scipy import signal

from sim import analysis, outputs
from sim.outputs import MICROVOLT_ROLES, write_outputs
from sim.runner import RunConfig, run_night


@pytest.fixture(scope="module")
def night():
    # Half an hour: the sleeper reaches N2 and stimuli are delivered.
    return run_night(RunConfig(source="sleeper://?hours=0.5", seed=3))


def fresh(result):
    """A copy of ``result`` without the analysis cached on it by earlier tests."""
    out = copy.copy(result)
    out.summary = copy.deepcopy(result.summary)
    for name in ("_ground_truth_phase", "_sigma_envelope"):
        out.__dict__.pop(name, None)
    return out


def test_session_fif_holds_the_recorded_samples_exactly(tmp_path, night):
    result = fresh(night)
    write_outputs(result, tmp_path, report=False)
    raw = mne.io.read_raw_fif(tmp_path / "session.fif", preload=True, verbose="error")
    scale = np.array([1e-6 if r in MICROVOLT_ROLES else 1.0 for r in result.ch_roles])
    # What a RawArray of the float64 volts, saved as single, holds.
    expected = (result.recorded.astype(np.float64) * scale[:, np.newaxis]).astype(np.float32)
    assert raw.ch_names == result.ch_names and raw.info["sfreq"] == result.sfreq
    assert np.array_equal(raw.get_data(), expected.astype(np.float64))
    desc = list(raw.annotations.description)
    assert sum(d.startswith("Sleep stage ") for d in desc) == len(result.hypnogram)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_outputs_agree_with_or_without_report_and_worker(tmp_path, night, monkeypatch):
    assert night.summary["stimuli"]["delivered"] > 0
    write_outputs(fresh(night), tmp_path / "a", report=True)
    # One CPU: no worker thread, the analysis is computed when needed.
    monkeypatch.setattr(outputs, "_usable_cpus", lambda: 1)
    write_outputs(fresh(night), tmp_path / "b", report=False)
    for name in ("events.jsonl", "hypnogram.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["analysis"]["phase_delivered"]["n"] > 0
    assert (tmp_path / "a" / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_an_error_in_the_analysis_worker_surfaces(tmp_path, night, monkeypatch):
    def broken(x, sfreq):
        raise FloatingPointError("phase exploded")

    monkeypatch.setattr(analysis, "ground_truth_phase", broken)
    with pytest.raises(FloatingPointError, match="phase exploded"):
        write_outputs(fresh(night), tmp_path)
    names = [p.name for p in tmp_path.iterdir()]
    # The report needs the phase too: it fails the same way, and is not left half-written.
    assert "summary.json" not in names and "report.png" not in names
    assert not [n for n in names if n.startswith(".")]


@pytest.mark.parametrize("n", [1000, 1001])
def test_sigma_envelope_is_the_hilbert_envelope(n):
    x = np.random.default_rng(0).standard_normal(n) * 30
    sos = signal.butter(4, [11.0, 16.0], "bandpass", fs=250.0, output="sos")
    want = np.abs(signal.hilbert(signal.sosfiltfilt(sos, x)))
    np.testing.assert_allclose(analysis.sigma_envelope(x, 250.0), want, rtol=0, atol=1e-9)
    got32 = analysis.sigma_envelope(x.astype(np.float32), 250.0)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, want, rtol=0, atol=1e-3 * want.max())


@pytest.mark.parametrize("n", [1000, 1001])
def test_ground_truth_phase_is_the_hilbert_phase(n):
    x = np.random.default_rng(1).standard_normal(n) * 30
    sos = signal.butter(2, [0.5, 2.0], "bandpass", fs=250.0, output="sos")
    want = np.degrees(np.angle(signal.hilbert(signal.sosfiltfilt(sos, x))))
    got = analysis.ground_truth_phase(x, 250.0)
    # Compared on the circle: -180 and 180 are the same phase.
    np.testing.assert_allclose((got - want + 180.0) % 360.0 - 180.0, 0.0, rtol=0, atol=1e-8)


def test_a_rerun_drops_the_previous_runs_outputs_only(tmp_path, night, monkeypatch, caplog):
    """Re-running into the same folder never mixes two runs: the previous run's outputs go
    before the new ones are written (--no-report, or a write that fails); other files stay."""
    write_outputs(fresh(night), tmp_path, report=True)
    assert (tmp_path / "report.png").exists() and (tmp_path / "session.fif").exists()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "report.png.bak").write_text("mine too")
    with caplog.at_level("INFO", logger="sim.outputs"):
        write_outputs(fresh(night), tmp_path, report=False)
    assert not (tmp_path / "report.png").exists()  # --no-report: no stale report
    assert any("report.png" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "report.png.bak").read_text() == "mine too"

    import sim.report

    def broken(result, path):
        raise OSError("disk full")

    monkeypatch.setattr(sim.report, "draw_report", broken)
    with pytest.raises(OSError, match="disk full"):
        write_outputs(fresh(night), tmp_path, report=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    # No summary.json of the previous run beside this run's partial files.
    assert "summary.json" not in names and "report.png" not in names
    assert {"notes.txt", "report.png.bak"} <= set(names)
    assert not [n for n in names if n.startswith(".")]


def test_a_recordings_stage_annotations_stay_apart_from_the_stagers(night):
    # An expert hypnogram in the recording must not be counted as the online stager's.
    result = fresh(night)
    result.annotations = [
        (0.0, 30.0, "Sleep stage W"),
        (30.0, 30.0, "Sleep stage 2"),
        (40.0, 0.0, "arousal"),
    ]
    ann = outputs.session_annotations(result)
    desc = [d for _, _, d in ann]
    assert sum(d.startswith("Sleep stage ") for d in desc) == len(result.hypnogram)
    assert {"recording/Sleep stage W", "recording/Sleep stage 2", "arousal"} <= set(desc)
    assert ann == sorted(ann)


# --------------------------------------------------------------------------------------
# session.fif keeps the recording's start; hypnogram.csv writes plain numbers

START = datetime.datetime(2003, 11, 17, 3, 27, tzinfo=datetime.UTC)


def test_session_fif_keeps_the_recordings_start_and_relative_onsets(tmp_path, night):
    assert getattr(night, "meas_date", None) is None  # the virtual sleeper has no date
    write_outputs(fresh(night), tmp_path / "virtual", report=False)
    raw = mne.io.read_raw_fif(tmp_path / "virtual" / "session.fif", verbose="error")
    assert raw.info["meas_date"] is None

    result = fresh(night)
    result.meas_date = START.timestamp() + 0.25
    result.annotations = [(12.5, 1.0, "arousal")]
    outputs.write_session_fif(result, tmp_path / "session.fif")
    raw = mne.io.read_raw_fif(tmp_path / "session.fif", verbose="error")
    assert raw.info["meas_date"] == START + datetime.timedelta(seconds=0.25)
    assert raw.first_samp == 0 and raw.annotations.orig_time == raw.info["meas_date"]
    # Onsets still count from the first sample, as for an undated night.
    ann = list(zip(raw.annotations.onset, raw.annotations.description, strict=True))
    assert [o for o, d in ann if d == "arousal"] == pytest.approx([12.5])
    stages = [o for o, d in ann if d.startswith("Sleep stage ")]
    assert stages == pytest.approx([s for s, _ in night.hypnogram])


def test_a_dated_recordings_session_fif_has_its_start(tmp_path):
    rng = np.random.default_rng(0)
    sfreq, seconds = 100.0, 90.0
    data = 30e-6 * rng.standard_normal((1, round(sfreq * seconds)))
    info = mne.create_info(["C3-A2"], sfreq, "eeg")
    # Acquisition began 10 s before the first sample kept: the night starts at START + 10 s.
    raw = mne.io.RawArray(data, info, first_samp=round(10 * sfreq), verbose=False)
    raw.set_meas_date(START)
    raw.set_annotations(mne.Annotations([40.0], [2.0], ["arousal"]))  # 40 s into the night
    path = tmp_path / "night_raw.fif"
    raw.save(path, verbose=False)
    result = run_night(RunConfig(source=str(path), seed=0))
    assert result.meas_date == pytest.approx(START.timestamp() + 10.0)
    write_outputs(result, tmp_path / "out", report=False)
    session = mne.io.read_raw_fif(tmp_path / "out" / "session.fif", verbose="error")
    assert session.info["meas_date"] == START + datetime.timedelta(seconds=10)
    onsets = dict(zip(session.annotations.description, session.annotations.onset, strict=False))
    assert onsets["arousal"] == pytest.approx(40.0)


def test_hypnogram_starts_are_plain_decimal_numbers(tmp_path, night):
    # An ordinary night: the bytes the ":g" format always wrote.
    outputs.write_hypnogram(night, tmp_path / "night.csv")
    want = "epoch_start_s,stage\n" + "".join(f"{s:g},{stage}\n" for s, stage in night.hypnogram)
    assert (tmp_path / "night.csv").read_text() == want

    result = fresh(night)
    result.hypnogram = [
        (0.0, "W"),
        (28770.5, "N1"),
        (999_990.0, "N2"),
        (1_000_020.0, "N2"),
        (1_000_050.123456, "N3"),
        (2_000_000.0000004, "R"),
    ]
    outputs.write_hypnogram(result, tmp_path / "long.csv")
    assert (tmp_path / "long.csv").read_text().splitlines()[1:] == [
        "0,W",
        "28770.5,N1",
        "999990,N2",
        "1000020,N2",
        "1000050.123456,N3",
        "2000000,R",
    ]
    assert [outputs.format_seconds(s) for s in (-0.0, 30.0, 1e7 + 0.5, 3.0000005)] == [
        "0",
        "30",
        "10000000.5",
        "3.000001",
    ]


def test_a_report_without_any_staged_epoch_draws_without_a_warning(tmp_path, night):
    """pytest turns warnings into errors: matplotlib's empty-legend warning would fail."""
    from sim.report import draw_report

    result = fresh(night)
    result.hypnogram, result.true_hypnogram = [], []
    draw_report(result, tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_fif_channel_names_drop_accents_and_keep_names_unique():
    from sim.outputs import fif_channel_names

    names = ["\u00d61-A2", "C3\u2013M2 \u00b5", "Fp\u00e9", "C3\u2014M2 \u00b5", "\u03b1-EEG"]
    assert fif_channel_names(names) == ["O1-A2", "C3-M2 u", "Fpe", "C3-M2 u-2", "?-EEG"]

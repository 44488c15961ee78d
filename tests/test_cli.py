"""The command line and the run outputs, on recordings the tests make."""

from __future__ import annotations

import json
import math
import os

import mne
import numpy as np
import pytest
from conftest import REPO, slow_wave_eeg

from firmware.program import builtin_programs
from sim.cli import build_parser, main

SFREQ = 250.0


def make_fif(path, seconds=300.0, sfreq=SFREQ, mutate=None, names=("C3-A1", "EOG1", "Chin")):
    eeg = slow_wave_eeg(seconds, sfreq, seed=4)
    rng = np.random.default_rng(5)
    data = np.vstack([eeg, 0.3 * eeg, 5e-6 * rng.standard_normal(eeg.size)])[: len(names)]
    if mutate is not None:
        mutate(data)
    info = mne.create_info(list(names), sfreq, ["eeg", "eog", "emg"][: len(names)])
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations([12.0], [3.0], ["lights off"]))
    raw.save(path, overwrite=True, verbose="error")
    return path


def run_cli(capsys, *args):
    code = main(["-q", "simulate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def read_events(out_dir):
    return [json.loads(line) for line in (out_dir / "events.jsonl").read_text().splitlines()]


def test_recording_run_writes_every_output(tmp_path, capsys):
    rec = make_fif(tmp_path / "night_raw.fif")
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "--recording", rec, "--channel", "C3-A1", "--out", out)
    assert code == 0
    assert "stimuli" in stdout and "x real time" in stdout
    events = read_events(out)
    times = [e["t"] for e in events]
    assert times == sorted(times)
    kinds = {e["kind"] for e in events}
    assert {"stim", "stage"} <= kinds
    stims = [e for e in events if e["kind"] == "stim"]
    assert all(isinstance(e["delivered"], bool) and e["reason"] for e in stims)
    assert any(e["delivered"] for e in stims)
    hyp = (out / "hypnogram.csv").read_text().splitlines()
    assert hyp[0] == "epoch_start_s,stage" and len(hyp) == 1 + 10
    assert [float(r.split(",")[0]) for r in hyp[1:]] == [30.0 * k for k in range(10)]
    assert {r.split(",")[1] for r in hyp[1:]} <= {"W", "N1", "N2", "N3", "R"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stimuli"]["delivered"] == sum(e["delivered"] for e in stims)
    assert summary["epochs"] == 10 and 0 < summary["cpu"]["cpu_load"] < 1
    assert math.isclose(summary["duration_s"], 300.0, abs_tol=0.1)
    raw = mne.io.read_raw_fif(out / "session.fif", verbose="error")
    assert raw.info["sfreq"] == SFREQ and raw.ch_names == ["C3-A1", "EOG1", "Chin"]
    desc = list(raw.annotations.description)
    assert "lights off" in desc  # the recording's annotations are kept
    assert sum(d.startswith("Sleep stage ") for d in desc) == 10
    assert sum(d == "stim/audio/delivered" for d in desc) == summary["stimuli"]["delivered"]
    # Volts in the file, as the firmware saw them (the ADC adds < 1 µV of noise).
    original = mne.io.read_raw_fif(rec, verbose="error").get_data()[0]
    n = min(original.size, raw.n_times)
    assert np.sqrt(np.mean((raw.get_data()[0, :n] - original[:n]) ** 2)) < 1e-6
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sham_logs_every_decision_and_plays_nothing(tmp_path, capsys):
    rec = make_fif(tmp_path / "night_raw.fif")
    code, _, _ = run_cli(capsys, "--recording", rec, "--program", "sham", "--out", tmp_path / "s")
    assert code == 0
    stims = [e for e in read_events(tmp_path / "s") if e["kind"] == "stim"]
    assert stims and all(not e["delivered"] and e["reason"] == "sham" for e in stims)


def test_default_channel_is_the_first_eeg_and_logged(tmp_path, capsys, caplog):
    rec = make_fif(tmp_path / "night_raw.fif")
    with caplog.at_level("INFO"):
        code = main(["simulate", "--recording", str(rec), "--out", str(tmp_path / "o")])
    assert code == 0
    assert any("C3-A1" in r.getMessage() for r in caplog.records)


def _nan_stretch(data):
    data[0, int(100 * SFREQ) : int(130 * SFREQ)] = np.nan


def _flat_stretch(data):
    data[0, int(100 * SFREQ) : int(130 * SFREQ)] = 12e-6


def _clipped_stretch(data):
    data[0, int(100 * SFREQ) : int(130 * SFREQ)] = 0.25  # beyond the ±187.5 mV input range


@pytest.mark.parametrize(
    ("mutate", "cause"),
    [(_nan_stretch, "lead_off"), (_flat_stretch, "flat"), (_clipped_stretch, "clipped")],
)
def test_bad_signal_is_marked_and_stimulation_withheld(tmp_path, capsys, mutate, cause):
    rec = make_fif(tmp_path / "bad_raw.fif", mutate=mutate)
    code, _, _ = run_cli(capsys, "--recording", rec, "--out", tmp_path / "o")
    assert code == 0  # the run goes on
    events = read_events(tmp_path / "o")
    bad = [e for e in events if e.get("event") == "bad_signal"]
    assert any(e["cause"] == cause and e["t"] <= 101 and e["t"] + e["duration"] >= 129 for e in bad)
    delivered = [e["t"] for e in events if e["kind"] == "stim" and e["delivered"]]
    assert delivered and not any(100 <= t < 135 for t in delivered)
    raw = mne.io.read_raw_fif(tmp_path / "o" / "session.fif", verbose="error")
    assert any(d.startswith("BAD_signal") for d in raw.annotations.description)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recording", "{tmp}/missing.edf"], "No such recording"),
        (["--recording", "{tmp}/notes.xyz"], "Unsupported file type .xyz"),
        (["--recording", "{tmp}/junk.edf"], "junk.edf"),
        (["--recording", "{rec}", "--channel", "C3-A2"], "C3-A1"),
        (["--recording", "{short}"], "30"),
        (["--recording", "{slow}"], "100"),
        (["--recording", "{rec}", "--program", "clsa"], "Did you mean 'clas'"),
        (["--recording", "nosuch://x"], "source scheme"),
        (["--recording", "{rec}?sfreq=200"], "Options need the URL form: 'file://"),
        (["--recording", "{tmp}/missing:1.edf"], "No such recording"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "notes.xyz").write_text("hello")
    (tmp_path / "junk.edf").write_bytes(np.random.default_rng(0).bytes(3000))
    paths = {
        "tmp": tmp_path,
        "rec": make_fif(tmp_path / "ok_raw.fif", seconds=120),
        "short": make_fif(tmp_path / "short_raw.fif", seconds=20),
        "slow": make_fif(tmp_path / "slow_raw.fif", seconds=120, sfreq=64.0),
    }
    argv = [a.format(**paths) for a in args]
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "o")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slumbersync: error:"), err
    assert message in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_a_file_name_with_a_colon_is_a_path_not_a_scheme(tmp_path, capsys, monkeypatch):
    rec = make_fif(tmp_path / "rec-T22:30_raw.fif", seconds=60)
    monkeypatch.chdir(tmp_path)  # a relative name: 'rec-T22' would parse as a URL scheme
    code, _, err = run_cli(capsys, "--recording", rec.name, "--out", tmp_path / "o", "--no-report")
    assert code == 0, err


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--recording", "x.edf"],
        ["simulate", "--out", "o", "--sfreq", "-5"],
        ["simulate", "--out", "o", "--seed", "x"],
        ["simulate", "--out", "o", "--emg", "none"],
        ["bogus"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slumbersync"), err
    assert "error: " in lines[0] and "--help" in lines[0]


def test_every_help_example_is_one_shell_command_the_parser_takes():
    """Pasted into a shell, an example runs as written ('&' and '?' quoted)."""
    import shlex

    from sim.cli import EXAMPLES

    text = EXAMPLES.replace("\\\n", " ")
    examples = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("slumbersync ")]
    assert len(examples) >= 4
    for line in examples:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        tokens = list(lexer)
        assert not {"&", ";", "|", "&&"} & set(tokens), line
        args = build_parser().parse_args(tokens[1:])
        assert args.command == "simulate" and args.out


def test_low_rate_recording_runs_when_allowed(tmp_path, capsys):
    rec = make_fif(tmp_path / "slow_raw.fif", seconds=120, sfreq=64.0)
    code, _, _ = run_cli(capsys, "--recording", rec, "--min-sfreq", "50", "--out", tmp_path / "o")
    assert code == 0


def test_a_failed_write_leaves_no_half_written_file(tmp_path, capsys, monkeypatch):
    import sim.report

    def broken(result, path):
        with open(path, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(sim.report, "draw_report", broken)
    rec = make_fif(tmp_path / "night_raw.fif", seconds=120)
    with pytest.raises(OSError, match="disk full"):
        main(["-q", "simulate", "--recording", str(rec), "--out", str(tmp_path / "o")])
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert "report.png" not in names and "summary.json" not in names
    assert not [n for n in names if n.startswith(".")]  # temporary files cleaned up


def test_help_is_complete():
    parser = build_parser()
    text = parser.format_help()
    assert "simulate" in text
    sub = parser._subparsers._group_actions[0].choices["simulate"].format_help()
    for option in ("--hours", "--seed", "--recording", "--channel", "--program", "--out"):
        assert option in sub
    assert main([]) == 2


@pytest.mark.parametrize("program", builtin_programs())
def test_every_builtin_program_runs_a_virtual_night(tmp_path, capsys, program):
    """Each shipped program, as a user starts it: outputs written, nothing tripped."""
    out = tmp_path / program
    code, stdout, _ = run_cli(
        capsys, "--hours", "0.5", "--seed", "3", "--program", program, "--out", out, "--no-report"
    )
    assert code == 0 and f"program    {program}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["program"] == program
    assert summary["safety"]["trips"] == 0
    stims = [e for e in read_events(out) if e["kind"] == "stim"]
    played = [e for e in stims if e["delivered"]]
    assert summary["stimuli"]["delivered"] == len(played)
    assert (
        all(e["reason"] == "sham" for e in stims)
        if program == "sham"
        else not any(e["reason"] == "sham" for e in stims)
    )


def test_non_ascii_channel_names_still_give_every_output(tmp_path, capsys):
    """FIF holds ASCII names: a 'C3–A1 µ' from an EDF/BrainVision file is written as
    'C3-A1 u' instead of failing after the night with a half-written folder."""
    data = mne.io.read_raw_fif(make_fif(tmp_path / "night_raw.fif", seconds=120.0)).get_data()
    names = ["C3\u2013A1 \u00b5", "EOG1", "Chin"]
    info = mne.create_info(names, SFREQ, ["eeg", "eog", "emg"])
    src = tmp_path / "named"  # the in-memory recording's description
    from hal.recording import RecordingSource
    from sim.outputs import write_outputs
    from sim.runner import Night, RunConfig

    source = RecordingSource.from_raw(
        mne.io.RawArray(data, info, verbose="error"), description=str(src)
    )
    result = Night(RunConfig(source=str(src), seed=1), source).run()
    out = write_outputs(result, tmp_path / "run", report=False)
    assert (out / "summary.json").exists()
    fif = mne.io.read_raw_fif(out / "session.fif", verbose="error")
    assert fif.ch_names[0] == "C3-A1 u"


def test_scenarios_run_on_recordings(tmp_path, capsys):
    """A scenario that adds signals copies the recording's read-only samples first."""
    rec = make_fif(tmp_path / "night_raw.fif", seconds=300.0)
    code, _, err = run_cli(
        capsys, "--recording", rec, "--scenario", "electrode-off", "--out", tmp_path / "run"
    )
    assert code == 0, err
    # The leads come off at 90 s while the glitched program asks for a pulse every 3 s:
    # the first request after that trips the island (lead-off flags of the recording's
    # own samples), within T_react of the request (its onset minus the 15-ms audio latency).
    events = read_events(tmp_path / "run")
    trips = [e for e in events if e.get("event") == "trip"]
    assert trips, "the electrode-off scenario must trip the island on a recording too"
    assert trips[0]["cause"] == "bad signal under stimulation"
    first = next(e for e in events if e["kind"] == "stim" and e["t"] > 90.0)
    assert 0.0 <= trips[0]["opened_t"] - (first["t"] - 0.015) <= 0.010
    assert not [e for e in events if e["kind"] == "stim" and e["t"] > 90.0 and e["delivered"]]


def test_program_name_with_dollars_and_a_latin1_file(tmp_path, capsys):
    from firmware.program import builtin_programs

    assert "clas" in builtin_programs()
    text = (REPO / "firmware" / "programs" / "clas.toml").read_text(encoding="utf-8")
    dollar = tmp_path / "dollar.toml"
    body = "\n".join(x for x in text.splitlines() if not x.startswith("name"))
    dollar.write_text('name = "clas $x_$ test"\n' + body, encoding="utf-8-sig")  # with a BOM
    code, _, err = run_cli(capsys, "--hours", "0.05", "--program", dollar, "--out", tmp_path / "a")
    assert code == 0, err
    assert (tmp_path / "a" / "report.png").exists()
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(('description = "caf\u00e9"\n' + text).encode("latin-1"))
    code, _, err = run_cli(capsys, "--hours", "0.05", "--program", latin, "--out", tmp_path / "b")
    assert code == 2 and "not UTF-8" in err and len(err.strip().splitlines()) == 1


def _no_night(*args, **kwargs):
    raise AssertionError("the night was simulated before --out was checked")


def _assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slumbersync: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.mark.parametrize("where", ["parent_is_a_file", "out_is_a_file"])
def test_unusable_out_is_refused_before_the_night(tmp_path, capsys, monkeypatch, where):
    """An --out that cannot hold files is a one-line error before anything is simulated
    (it used to be a traceback from the first temporary file, after the whole night)."""
    import sim.runner

    monkeypatch.setattr(sim.runner, "run_night", _no_night)
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "run" if where == "parent_is_a_file" else tmp_path / "afile"
    code, _, err = run_cli(capsys, "--hours", "0.05", "--out", out)
    _assert_one_line_error(code, err, str(out))
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_out_where_no_file_can_be_created_is_refused_before_the_night(
    tmp_path, capsys, monkeypatch
):
    """A folder that exists but refuses new files (read-only, full, not ours); simulated
    by a failing mkstemp so that it holds when the tests run as root too."""
    import tempfile

    import sim.runner

    monkeypatch.setattr(sim.runner, "run_night", _no_night)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    (tmp_path / "ro").mkdir()
    code, _, err = run_cli(capsys, "--hours", "0.05", "--out", tmp_path / "ro")
    _assert_one_line_error(code, err, "ro", "Permission denied")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_out_is_refused_before_the_night(tmp_path, capsys, monkeypatch):
    import sim.runner

    monkeypatch.setattr(sim.runner, "run_night", _no_night)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = run_cli(capsys, "--hours", "0.05", "--out", ro)
    finally:
        ro.chmod(0o755)
    _assert_one_line_error(code, err, str(ro))
    assert list(ro.iterdir()) == []


def test_a_failed_run_leaves_no_empty_out_folder_behind(tmp_path, capsys):
    """The early --out check creates the folder; a user error in the night removes the
    folders it created (and only those, and only when still empty)."""
    (tmp_path / "keep").mkdir()
    out = tmp_path / "keep" / "new" / "run"
    code, _, err = run_cli(capsys, "--recording", tmp_path / "missing.edf", "--out", out)
    _assert_one_line_error(code, err, "No such recording")
    assert not (tmp_path / "keep" / "new").exists() and (tmp_path / "keep").is_dir()


def test_bad_hypnogram_file_is_one_line_with_its_line(tmp_path, capsys):
    hyp = tmp_path / "h.csv"
    hyp.write_text("epoch_start_s,stage\n0,W\n30\n")
    code, _, err = run_cli(
        capsys, "--recording", f"sleeper://?hypnogram={hyp}", "--out", tmp_path / "o"
    )
    _assert_one_line_error(code, err, "'hypnogram'", "h.csv", "line 3")


def test_scenario_injections_after_the_night_are_not_logged(tmp_path, capsys):
    """wake-button presses the button at 100 s and 170 s: a 2-min night ends before the
    second press, which must neither happen nor be logged."""
    out = tmp_path / "o"
    code, _, err = run_cli(
        capsys,
        "--hours",
        str(120 / 3600),
        "--scenario",
        "wake-button",
        "--out",
        out,
        "--no-report",
    )
    assert code == 0, err
    world = [e for e in read_events(out) if e["kind"] == "world"]
    assert all(e["t"] < 120.0 for e in world), world
    injected = [(e["t"], e["event"]) for e in world if e["event"].startswith(("button", "rearm"))]
    assert injected == [(100.0, "button-down"), (100.5, "button-up")]


def test_app_hang_deadlines_are_positive(tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = run_cli(
        capsys, "--hours", "0.1", "--scenario", "app-hang", "--out", out, "--no-report"
    )
    assert code == 0, err
    misses = [e for e in read_events(out) if e["kind"] == "deadline"]
    assert misses
    assert all(e["deadline_ms"] > 0 and e["response_ms"] > e["deadline_ms"] for e in misses), misses

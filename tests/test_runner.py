"""The night runner: reproducibility, timing on the simulated core, the world hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ArraySource, slow_wave_eeg

from hal.base import DEFAULT_BLOCK, UserInputError
from sim.runner import Night, RunConfig, open_configured_source, run_night

SFREQ = 250.0


class ListeningSource(ArraySource):
    """An array source that remembers the stimuli it heard and when they were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.heard = []
        self.reads = []

    def stimulate(self, stimulus):
        self.heard.append(stimulus)

    def read(self, start, stop):
        self.reads.append((start, stop, len(self.heard)))
        return super().read(start, stop)

    def world_events(self, start, stop):
        return [
            {"kind": "world", "t": s / SFREQ, "event": "tick"}
            for s in range(start, stop)
            if s % int(60 * SFREQ) == 0
        ]


def night(seconds=300, seed=0, **config):
    eeg = slow_wave_eeg(seconds, SFREQ, seed=seed)
    src = ListeningSource(np.vstack([eeg, 0.3 * eeg]), SFREQ, [("C4-M1", "eeg"), ("E1", "eog")])
    return Night(RunConfig(source="test", seed=seed, **config), src), src


def test_a_run_is_reproducible_from_its_seed():
    a, _ = night(seed=3)
    b, _ = night(seed=3)
    ra, rb = a.run(), b.run()
    strip = [{k: v for k, v in e.items()} for e in ra.events]
    assert strip == rb.events
    np.testing.assert_array_equal(ra.recorded, rb.recorded)
    c, _ = night(seed=4)
    assert c.run().events != ra.events


def test_stimuli_reach_the_world_at_their_onset_and_before_later_samples_are_read():
    n, src = night()
    result = n.run()
    delivered = [e for e in result.events if e["kind"] == "stim" and e["delivered"]]
    assert len(src.heard) == len(delivered) > 10
    for stim, ev in zip(src.heard, delivered, strict=True):
        assert ev["t"] == pytest.approx(stim.onset_sample / SFREQ)
        # The night resumes at the block holding the onset, read after the world heard it;
        # reads made before (speculative, cut by the decision) start before that block.
        k = src.heard.index(stim)
        first = stim.onset_sample // 8 * 8
        resumed = [heard for start, _, heard in src.reads if start == first]
        assert resumed and all(heard > k for heard in resumed)
        assert all(heard > k for start, _, heard in src.reads if start > first)


def test_stimulus_decisions_are_timed_on_the_core():
    n, _ = night()
    result = n.run()
    stims = [e for e in result.events if e["kind"] == "stim"]
    for e in stims:
        # Decided after its block arrived, fired before the onset by the output latency.
        assert e["decided_t"] < e["t"] - 0.015
    tasks = result.summary["cpu"]["tasks"]
    assert set(tasks) == {"acquisition", "dsp", "modulation", "staging"}
    assert tasks["acquisition"]["runs"] == result.n_samples // 8
    assert tasks["staging"]["runs"] == 10
    assert 0 < result.summary["cpu"]["cpu_load"] < 0.05


def test_a_slow_clock_misses_deadlines_and_says_so():
    n, _ = night(seconds=120, clock_hz=3e4)  # a 30 kHz core cannot keep up
    result = n.run()
    misses = [e for e in result.events if e["kind"] == "deadline"]
    assert misses
    assert result.summary["deadline_misses"] == sum(e.get("count", 1) for e in misses)
    assert {"task", "response_ms", "deadline_ms"} <= set(misses[0])
    assert misses[0]["response_ms"] > misses[0]["deadline_ms"]


def test_world_events_are_collected_once_in_order():
    n, _ = night()
    ticks = [e["t"] for e in n.run().events if e["kind"] == "world"]
    assert ticks == [0.0, 60.0, 120.0, 180.0, 240.0]


def test_interlock_limits_refuse_and_log():
    from hal.interlock import Limits

    n, src = night(limits=Limits(max_per_minute=3))
    result = n.run()
    stims = [e for e in result.events if e["kind"] == "stim"]
    refused = [e for e in stims if e["reason"].startswith("limit")]
    assert refused and len(src.heard) == sum(e["delivered"] for e in stims)
    assert any(e.get("event") == "limit" for e in result.events if e["kind"] == "safety")
    # No 60-s window of delivered onsets (what the sleeper heard) holds more than 3.
    onsets = np.sort([s.onset_sample / SFREQ for s in src.heard])
    first = np.searchsorted(onsets, onsets - 60.0, side="right")
    assert (np.arange(onsets.size) - first + 1).max() <= 3


def test_a_trip_in_flight_cuts_the_stimulus_before_the_sleeper_hears_it():
    """S1 at the transducer: a stimulus granted at its fire time (onset an output latency
    later), then a host KILL 2 ms after: the interlock opens before the onset, so the pulse
    is cut. The sleeper never hears it; it is logged undelivered and counted as ``cut``."""
    from sim.runner import CUT_REASON

    first = next(e for e in night()[0].run().events if e["kind"] == "stim" and e["delivered"])
    fire = first["t"] - 0.015
    n, src = night()

    def host_kill():
        yield n.env.timeout(fire + 0.002)
        n.island.host_command(b"KILL", n.env.now)
        n._kick_island()

    n.env.process(host_kill())
    result = n.run()
    stim = next(e for e in result.events if e["kind"] == "stim" and e["t"] == first["t"])
    assert stim["delivered"] is False and stim["reason"] == CUT_REASON
    trip = result.summary["safety"]["first_trip"]
    assert fire < trip["opened_t"] < first["t"] and trip["cause"] == "host kill"
    assert result.summary["stimuli"]["cut"] == 1 and result.summary["stimuli"]["delivered"] == 0
    assert src.heard == []  # the world never heard it
    assert n.island.was_open(first["t"])


class _EchoApp:
    """An application that asks every stimulus twice, for the same onset sample."""

    def __init__(self, app) -> None:
        self._app = app

    def __getattr__(self, name: str):
        return getattr(self._app, name)

    def process(self, start, data, flags):
        res = self._app.process(start, data, flags)
        res.stims.extend(list(res.stims))
        return res


def test_two_stimuli_due_at_the_same_sample_are_both_answered(monkeypatch):
    """A faulty application may ask twice for one onset (the electrode-off scenario's glitch
    beside the honest trigger did): each request gets its event; the night goes on."""
    import sim.scenarios

    def make_scenario(name, seed):
        return sim.scenarios.Scenario(name, seed, wrap_app=_EchoApp)

    monkeypatch.setattr(sim.scenarios, "make_scenario", make_scenario)
    from sim.runner import run_night

    result = run_night(
        RunConfig(source="sleeper://?seed=3&hours=1", seed=3, record=False, scenario="echo")
    )
    stims = [e for e in result.events if e["kind"] == "stim"]
    onsets = [e["t"] for e in stims]
    assert stims and all(onsets.count(t) == 2 for t in onsets)


# -- the end of the night: a recording need not end on a block boundary ---------------------


def write_recording(path, seconds, sfreq=SFREQ):
    """A two-channel FIF of slow waves, written by MNE."""
    import mne

    eeg = slow_wave_eeg(seconds, sfreq, seed=4)
    info = mne.create_info(["C3-A1", "EOG1"], sfreq, ["eeg", "eog"])
    raw = mne.io.RawArray(np.vstack([eeg, 0.3 * eeg]), info, verbose="error")
    raw.save(path, overwrite=True, verbose="error")
    return path


@pytest.mark.parametrize("seconds", [30, 90, 95, 120])
def test_every_complete_epoch_of_a_recording_is_staged(tmp_path, seconds):
    """An epoch is 7500 samples at 250 Hz, 937.5 blocks of 8: a recording of an odd number
    of epochs ends inside a block. Its last epoch is staged all the same (a 30-s recording
    has one), and the night lasts what the recording lasts."""
    rec = write_recording(tmp_path / "night_raw.fif", seconds)
    result = run_night(RunConfig(source=str(rec), seed=1))
    n = round(seconds * SFREQ)
    epochs = seconds // 30
    assert result.n_samples == n and result.recorded.shape[1] == n
    assert result.summary["duration_s"] == seconds
    assert result.summary["epochs"] == epochs
    assert [start for start, _ in result.hypnogram] == [30.0 * k for k in range(epochs)]
    stages = [e for e in result.events if e["kind"] == "stage"]
    assert [e["epoch"] for e in stages] == list(range(epochs))
    tasks = result.summary["cpu"]["tasks"]
    assert tasks["staging"]["runs"] == epochs
    assert tasks["acquisition"]["runs"] == n // 8  # whole DMA blocks only: nothing padded


def test_the_samples_after_the_last_block_are_read_once_and_only_staged():
    n, src = night(seconds=90)
    result = n.run()
    whole = 90 * 250 // 8 * 8  # 22496
    assert n.n_total == whole and result.n_samples == 22500
    assert [(start, stop) for start, stop, _ in src.reads if stop > whole] == [(whole, 22500)]
    # The world heard every stimulus due before them first; none was decided from them.
    heard = next(h for start, _, h in src.reads if start == whole)
    stims = [e for e in result.events if e["kind"] == "stim"]
    assert heard == sum(e["delivered"] for e in stims if e["t"] < 90.0)
    assert all(e["decided_t"] < whole / SFREQ for e in stims)
    # What the firmware saw is recorded to the last sample, as the front-end gave it.
    data, _ = n.front.read(whole, 22500)
    np.testing.assert_array_equal(result.recorded[:, whole:], data.astype(np.float32))
    assert np.abs(result.recorded[:, whole:]).min() > 0
    assert [s for s, _ in result.hypnogram] == [0.0, 30.0, 60.0]
    last = [e for e in result.events if e["kind"] == "stage"][-1]
    assert last["epoch"] == 2 and last["t"] >= 90.0


def test_a_virtual_night_of_an_odd_number_of_epochs_keeps_its_last_one():
    result = run_night(RunConfig(source="sleeper://?hours=0.025", seed=3, record=False))
    assert result.summary["duration_s"] == 90.0
    assert result.summary["epochs"] == len(result.true_hypnogram) == 3


# -- device rate and the options written in the source spec ---------------------------------


def run_cli(capsys, *args):
    from sim.cli import main

    code = main(["-q", "simulate", *map(str, args), "--no-report"])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slumbersync: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_rates_written_in_the_spec_win_over_the_defaults(tmp_path):
    slow = write_recording(tmp_path / "slow_raw.fif", 60, sfreq=64.0)
    with open_configured_source(RunConfig(source=slow.as_uri() + "?min_sfreq=50")) as src:
        assert src.info.sfreq == 250.0
    src = open_configured_source(RunConfig(source="sleeper://?sfreq=128&hours=0.01"))
    assert src.info.sfreq == 128.0
    # The same value in both places is no conflict.
    src = open_configured_source(RunConfig(source="sleeper://?sfreq=128&hours=0.01", sfreq=128))
    assert src.info.sfreq == 128.0
    src = open_configured_source(RunConfig(source="sleeper://?hours=0.01"))
    assert src.info.sfreq == 250.0


def test_the_cli_takes_rates_from_the_spec(tmp_path, capsys):
    slow = write_recording(tmp_path / "slow_raw.fif", 60, sfreq=64.0)
    out = tmp_path / "a"
    code, _, err = run_cli(capsys, "--recording", slow.as_uri() + "?min_sfreq=50", "--out", out)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["sfreq"] == 250.0
    out = tmp_path / "b"
    code, _, err = run_cli(capsys, "--recording", "sleeper://?sfreq=128&hours=0.02", "--out", out)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["sfreq"] == 128.0


@pytest.mark.parametrize(
    "spec, option, fragments",
    [
        ("{slow}?min_sfreq=50", ["--min-sfreq", "60"], ["min_sfreq", "--min-sfreq 60", "=50"]),
        ("sleeper://?sfreq=128&hours=0.02", ["--sfreq", "250"], ["--sfreq 250", "sfreq=128"]),
        ("{slow}?channel=C3-A1", ["--channel", "EOG1"], ["--channel EOG1", "channel=C3-A1"]),
    ],
)
def test_a_cli_option_contradicting_the_spec_is_a_one_line_error(
    tmp_path, capsys, spec, option, fragments
):
    slow = write_recording(tmp_path / "slow_raw.fif", 60, sfreq=64.0)
    spec = spec.format(slow=slow.as_uri())
    code, _, err = run_cli(capsys, "--recording", spec, *option, "--out", tmp_path / "o")
    one_line_error(code, err, *fragments)
    assert not (tmp_path / "o" / "summary.json").exists()


def test_the_min_sfreq_advice_works_from_the_cli(tmp_path, capsys):
    slow = write_recording(tmp_path / "slow_raw.fif", 60, sfreq=64.0)
    code, _, err = run_cli(capsys, "--recording", slow, "--out", tmp_path / "o")
    line = one_line_error(code, err, "--min-sfreq 64", "?min_sfreq=64")
    assert "below min_sfreq=100 Hz" in line
    code, _, err = run_cli(
        capsys, "--recording", slow, "--min-sfreq", "64", "--out", tmp_path / "a"
    )
    assert code == 0, err
    spec = slow.as_uri() + "?min_sfreq=64"
    code, _, err = run_cli(capsys, "--recording", spec, "--out", tmp_path / "b")
    assert code == 0, err


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--recording", "{rec}", "--sfreq", "40"], ["at least 50 Hz", "got 40 Hz"]),
        (["--recording", "{rec}", "--sfreq", "49.5"], ["whole number", "got 49.5"]),
        (["--recording", "{rec}?sfreq=40"], ["at least 50 Hz", "got 40 Hz"]),
        (["--recording", "{rec}", "--sfreq", "250.5"], ["whole number of Hz", "got 250.5"]),
        (["--recording", "sleeper://?sfreq=250.5"], ["whole number of Hz", "got 250.5"]),
        (["--hours", "0.1", "--sfreq", "250.5"], ["whole number of Hz", "got 250.5"]),
    ],
)
def test_a_device_rate_the_firmware_cannot_run_is_refused_before_the_night(
    tmp_path, capsys, monkeypatch, args, fragments
):
    import sim.runner

    def no_loading(*args, **kwargs):
        raise AssertionError("the source was opened before the rate was checked")

    monkeypatch.setattr(sim.runner, "open_source", no_loading)
    rec = write_recording(tmp_path / "night_raw.fif", 60).as_uri()
    argv = [a.format(rec=rec) for a in args]
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "o")
    one_line_error(code, err, "sfreq", *fragments)


@pytest.mark.parametrize(
    "sfreq, fragments", [(40.0, ["at least 50 Hz", "got 40 Hz"]), (250.5, ["whole number"])]
)
def test_the_firmware_refuses_a_rate_it_cannot_run_at(sfreq, fragments):
    """Whatever the source (here one opened by the caller), the application checks it."""
    eeg = slow_wave_eeg(60, sfreq, seed=0)
    src = ArraySource(eeg[np.newaxis], sfreq, [("C4-M1", "eeg")])
    with pytest.raises(UserInputError) as err:
        Night(RunConfig(source="test"), src)
    assert all(f in str(err.value) for f in fragments) and "\n" not in str(err.value)


def test_a_program_that_needs_a_higher_rate_says_so():
    """The onset program's beta band (16-30 Hz) does not exist at 60 Hz; clas runs there."""
    eeg = slow_wave_eeg(60, 60.0, seed=0)
    src = ArraySource(eeg[np.newaxis], 60.0, [("C4-M1", "eeg")])
    with pytest.raises(UserInputError, match="'onset'.* 60 Hz"):
        Night(RunConfig(source="test", program="onset"), src)
    assert Night(RunConfig(source="test"), src).run().summary["epochs"] == 2


def test_a_channel_given_in_both_places_alike_is_accepted(tmp_path):
    path = write_recording(tmp_path / "night_raw.fif", 60)
    config = RunConfig(source=path.as_uri() + "?channel=C3-A1", channel="C3-A1", record=False)
    assert run_night(config).ch_names[0] == "C3-A1"


def test_a_stimulus_due_after_the_nights_end_is_logged_not_played():
    # Decisions are causal: cutting the recording between a decision and its onset keeps
    # the decision, whose onset then has no sample left to be heard in.
    eeg = slow_wave_eeg(600, SFREQ, seed=3)
    full = Night(RunConfig(source="test"), ArraySource(eeg[np.newaxis], SFREQ, [("C4", "eeg")]))
    played = [e for e in full.run().events if e["kind"] == "stim" and e["delivered"]]
    assert played
    stim = played[-1]
    onset = round(stim["t"] * SFREQ)
    # Decided in a whole block before the cut (the samples after the last block are staged
    # only, never scanned for triggers).
    assert round(stim["decided_t"] * SFREQ) <= (onset - 1) // DEFAULT_BLOCK * DEFAULT_BLOCK
    cut = ArraySource(eeg[np.newaxis, : onset - 1], SFREQ, [("C4", "eeg")])
    result = Night(RunConfig(source="test"), cut).run()
    last = [e for e in result.events if e["kind"] == "stim"][-1]
    assert last["t"] == stim["t"] and not last["delivered"]
    assert last["reason"] == "after the night's end"
    assert result.summary["stimuli"]["after_end"] == 1
    assert result.summary["stimuli"]["delivered"] == len(played) - 1


def test_stimulation_resumes_after_a_flat_stretch_once_its_hold_off_is_over():
    # A minute of flat line must not teach the arousal detector's baseline the converter's
    # noise: the returning EEG would look like repeated arousals and pause stimulation
    # for minutes (it did: no stimulus in the 340 s after the stretch).
    eeg = slow_wave_eeg(1100, SFREQ, seed=3)
    flat = eeg.copy()
    flat[int(600 * SFREQ) : int(660 * SFREQ)] = 0.0

    def delivered_after_the_stretch(x):
        night = Night(
            RunConfig(source="test", record=False), ArraySource(x[None], SFREQ, [("C4", "eeg")])
        )
        events = night.run().events
        assert any(e.get("event") == "bad_signal" for e in events) == (x is flat)
        return [
            e for e in events if e["kind"] == "stim" and e["delivered"] and 660 <= e["t"] < 1000
        ]

    clean = delivered_after_the_stretch(eeg)
    assert len(clean) > 50
    assert len(delivered_after_the_stretch(flat)) >= 0.9 * len(clean)


def test_chin_emg_recorded_at_a_low_rate_is_not_used_for_arousals(caplog):
    # A 50-Hz recording keeps 10-25 Hz of the chin lead: spindles, alpha and the heart
    # leaking into it read as bursts, and the arousals they made paused stimulation all
    # night (DREAMS excerpt 3: 0 stimuli with its EMG, 51 without).
    from dataclasses import replace

    from firmware.app import Application
    from firmware.program import load_program

    eeg = slow_wave_eeg(60, SFREQ, seed=3)
    src = ArraySource(np.vstack([eeg, 0.1 * eeg]), SFREQ, [("C3", "eeg"), ("Chin", "emg")])
    full = Application(load_program("clas"), src.info, DEFAULT_BLOCK, 0.015)
    assert full.arousal.has_emg and full.stager.has_emg
    with caplog.at_level("WARNING", logger="firmware.app"):
        low = Application(
            load_program("clas"), replace(src.info, bandwidth_hz=25.0), DEFAULT_BLOCK, 0.015
        )
    assert not low.arousal.has_emg and low._arousal_rows == [0]
    assert low.stager.has_emg  # the stager's EMG features stay below 24 Hz
    assert "'Chin' holds nothing above 25 Hz" in caplog.text


DREAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreams"


@pytest.mark.skipif(not (DREAMS / "excerpt3.edf").exists(), reason="DREAMS data not present")
def test_a_real_psg_with_chin_emg_and_ecg_at_50_hz_is_stimulated_without_false_alarms():
    # DREAMS excerpt 3: C3 with EOG, chin EMG and an inverted, wandering ECG, all at 50 Hz.
    # Its chin lead paused stimulation all night, then the island read its ECG as distress.
    config = RunConfig(
        source=str(DREAMS / "excerpt3.edf"), channel="C3-A1", min_sfreq=50, record=False
    )
    summary = run_night(config).summary
    assert summary["stimuli"]["delivered"] >= 30
    assert summary["safety"]["trips"] == 0 and summary["stimuli"]["refused"] == 0

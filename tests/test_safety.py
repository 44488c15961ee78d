"""The safety island: configuration, port, watchdog, limits, re-arm, and the scenarios."""

from __future__ import annotations

import json

import pytest

from bench.safety import Harness, campaign
from firmware.safety import AppPort, SafetyConfig, load_safety_config, rearm_frame
from hal.base import UserInputError
from hal.interlock import Limits
from sim.cli import main
from sim.runner import Night, RunConfig, open_configured_source

#: T_react of the default configuration (S2).
T_REACT = SafetyConfig().t_react_s
#: Output latency of the runner's audio transducer (a stim event's ``t`` is its onset).
AUDIO_LATENCY = RunConfig().audio_latency_s


def test_config_beyond_a_ceiling_or_inconsistent_is_refused_naming_the_field():
    with pytest.raises(UserInputError, match="max_level_db"):
        load_safety_config({"limits": {"max_level_db": 65}})
    with pytest.raises(UserInputError, match="window_min_s"):
        load_safety_config({"window_min_s": 2.0, "window_max_s": 1.5})
    with pytest.raises(UserInputError, match="t_react_s"):
        load_safety_config({"t_react_s": 0.05})
    with pytest.raises(UserInputError, match="Unknown safety setting 'bogus'"):
        load_safety_config({"bogus": 1})
    assert load_safety_config(None) == SafetyConfig()


def test_the_port_is_narrow():
    h = Harness()
    public = {n for n in dir(h.port) if not n.startswith("_")}
    assert public == {
        "request",
        "check_in",
        "check_in_many",
        "check_in_periods",
        "latency",
        "message",
        "tripped",
    }
    assert isinstance(h.port, AppPort) and not hasattr(h.port, "__dict__")


def test_a_hung_application_trips_the_watchdog_within_t_react():
    h = Harness()
    h.advance(5.0)
    assert not h.island.tripped
    h.hang()
    h.advance(3.0)
    trip = h.island.trips[0]
    assert trip["cause"] == "watchdog: acquisition missing"
    assert trip["opened_t"] - trip["condition_since"] <= 0.010
    assert h.violations == []


def test_refused_requests_are_logged_and_repeated_breaches_trip():
    h = Harness()
    h.advance(1.5)
    assert h.request(50.0, 0.05)
    for _ in range(3):
        assert not h.request(70.0, 0.05)  # refused, never played at 55 dB
    h.advance(0.01)
    assert [e["event"] for e in h.island.log].count("limit") == 3
    assert h.island.trips[-1]["cause"] == "repeated limit breach"
    assert h.violations == []


def test_an_opening_in_flight_cuts_the_pulse_before_the_transducer():
    """S1 at the transducer: granted at 2.000 s (audio, onset 2.015 s), then a host KILL at
    2.002 s: the interlock opens at 2.0032 s and the pulse never reaches the speaker."""
    h = Harness()
    h.advance(2.0 - h.now)
    assert h.request(50.0, 0.05)  # passed, in flight
    h.advance(0.002)
    h.kill()
    h.advance(0.05)
    lock = h.island._lock
    assert lock.openings[0][0] < 2.015 and len(lock.cut) == 1
    assert [o for o in lock.outputs if not o.cue] == []
    assert h.transducers["audio"].emitted == []
    assert h.violations == []


def test_a_pulse_whose_onset_came_before_the_opening_was_delivered():
    h = Harness()
    h.advance(2.0 - h.now)
    assert h.request(50.0, 0.05)
    h.advance(0.02)  # past the onset at 2.015 s
    h.kill()
    h.advance(0.05)
    assert len(h.transducers["audio"].emitted) == 1 and not h.island._lock.cut
    assert h.violations == []


def test_an_over_limit_pulse_is_refused_never_clipped():
    """S4: a 0.5-s pulse (limit 0.2 s) and levels over each modality's limit come back
    refused and logged; nothing reaches a transducer, nothing clipped into a pass."""
    h = Harness()
    h.advance(1.5)
    for level, duration, modality in [
        (50.0, 0.5, "audio"),
        (56.0, 0.05, "audio"),
        (31.0, 0.05, "light"),
    ]:
        assert not h.request(level, duration, modality)
        h.advance(0.1)
    limits = [e["limit"] for e in h.island.log if e["event"] == "limit"]
    assert len(limits) == 3 and limits[0].startswith("max_pulse_s 0.5")
    assert "max_level_db" in limits[1] and "max_light_pct" in limits[2]
    assert h.island._lock.outputs == [] and h.island._lock.in_flight() == []
    assert all(tx.emitted == [] for tx in h.transducers.values())
    assert h.violations == []


def test_the_nightly_dose_holds():
    """S4: with max_per_night = 5 the sixth request is refused, logged and never emitted."""
    h = Harness(SafetyConfig(staging_start_s=0.0, limits=Limits(max_per_night=5)))
    h.advance(1.5)
    granted = []
    for _ in range(6):
        granted.append(h.request(50.0, 0.05))
        h.advance(3.0)
    assert granted == [True] * 5 + [False]
    assert [e["limit"] for e in h.island.log if e["event"] == "limit"] == [
        "max_per_night 5 reached"
    ]
    assert len(h.transducers["audio"].emitted) == 5
    assert h.violations == []


def test_a_fast_looping_app_trips_the_windowed_watchdog_early():
    """A looping application checks in every 0.1 s with correct sequence numbers: the
    second check-in is early (window opens at 0.5 s) and trips within T_react."""
    h = Harness()
    h.advance(3.0)
    h.fast_loop(1, 0.1)  # 0.1 s after the last scheduled check-in: early
    first = h.now
    h.advance(0.05)
    trip = h.island.trips[0]
    assert trip["cause"] == "watchdog: acquisition early"
    assert first <= trip["opened_t"] <= first + T_REACT
    assert h.violations == []


def test_a_late_check_in_handed_over_in_bulk_trips():
    """Check-ins handed over in bulk are stamped ahead and verified in order without the
    timer between them: one 1.8 s after the previous is late (the window closes at 1.6 s).
    It must not be taken as on time (which would move the window on): the interlock opens
    within T_react of the window's close."""
    h = Harness()
    h.advance(3.0)
    h.bulk_periods([0.5, 1.0, 1.8])  # stamped ahead: the last one late
    closes = h.last_acq_true - 1.8 + h.cfg.window_max_s
    h.advance(h.last_acq_true - h.now + 0.05)
    trip = h.island.trips[0]
    assert trip["cause"] in ("watchdog: acquisition missing", "watchdog: acquisition late")
    assert closes <= trip["opened_t"] <= closes + T_REACT
    assert h.violations == []


def test_rearm_needs_the_token_and_a_fresh_nonce():
    h = Harness()
    h.kill()
    h.advance(0.01)
    assert h.island.tripped
    h.app_rearm_attempt()
    assert h.island.tripped
    assert not h.island.host_command(b"REARM x y", h.now)
    assert h.island.host_command(rearm_frame(b"board-secret", 5), h.now)
    assert not h.island.tripped
    h.kill()
    h.advance(0.01)
    assert not h.island.host_command(rearm_frame(b"board-secret", 5), h.now)  # replayed
    reasons = [e.get("reason") for e in h.island.log if e["event"] == "rearm_refused"]
    assert {"malformed", "replayed", "from the application"} <= set(reasons)


def _stimulate_during(h, pattern):
    """A stimulus, then the sleeper moves for each ``(moving, seconds)`` of ``pattern``."""
    assert h.request(50.0, 0.05)
    for moving, seconds in pattern:
        h.moving = moving
        h.advance(seconds)
    h.moving = False


def test_mains_hum_on_the_chin_lead_is_not_an_arousal():
    h = Harness()
    h.advance(2.0)
    h.hum_uv = 300.0  # RMS far above emg_uv, all of it at 50 Hz and its alias at 100 Hz
    h.advance(10.0)
    assert h.request(50.0, 0.05) and not h.island.tripped
    h.moving = True  # a real burst: movement and broadband chin EMG
    h.advance(5.0)
    assert not h.request(50.0, 0.05)
    h.advance(0.01)
    assert h.island.trips[-1]["cause"] == "arousal under stimulation"
    assert h.violations == []


def test_one_arousal_that_comes_and_goes_is_one_attempt():
    h = Harness()
    h.advance(2.0)
    # Movement in three pieces 3 s apart, each shorter than arousal_min_s: one attempt.
    _stimulate_during(h, [(True, 1.0), (False, 3.0), (True, 1.0), (False, 3.0), (True, 1.0)])
    h.advance(1.0)
    assert not h.island.tripped
    # Three attempts 15 s apart, each under a fresh stimulus: the trapped sleeper.
    h.advance(15.0)
    for _ in range(3):
        _stimulate_during(h, [(True, 1.0), (False, 14.0)])
        if h.island.tripped:
            break
    h.advance(0.01)
    assert h.island.trips[-1]["cause"] == "trapped sleeper"
    assert h.violations == []


def _distressed(h, seconds=10.0):
    """The heart races (100 bpm against a 60-bpm baseline) for ``seconds``."""
    h.hr = 100.0
    h.advance(seconds)
    assert h.island._distress_since is not None  # the island's own view says distress


def test_the_heart_rate_is_read_on_an_inverted_wandering_lead_of_any_gain():
    # A real lead may be inverted, at three times the gain, with a T wave and a baseline
    # that wanders by millivolts: a calm 56-bpm heart is calm (a fixed upward threshold on
    # the raw lead counted drift and T waves as beats, and called it distress), and a
    # racing one is still distress.
    h = Harness()
    h.hr = 56.0
    h.ecg_gain, h.ecg_t_uv, h.ecg_wander_uv = -3.0, 300.0, 4000.0
    h.advance(180.0)
    assert h.island._hr_base == pytest.approx(56.0, abs=1.5)
    assert h.island._distress_since is None and not h.island.trips
    _distressed(h)


def test_distress_that_began_before_stimulation_may_be_answered_until_the_last_resort():
    """A nightmare-guard pulse into distress that began without stimulation is allowed;
    if the distress lasts distress_max_s with stimulation in it, the trapped-sleeper rule
    trips (and the release cue follows)."""
    h = Harness()
    h.advance(60.0)  # the heart-rate baseline settles
    _distressed(h)
    assert h.request(20.0, 0.2, modality="haptic") and not h.island.tripped
    for _ in range(8):
        h.advance(5.0)
        if h.island.tripped:
            break
        assert h.request(30.0, 0.2, modality="haptic")
    h.advance(0.01)
    trip = h.island.trips[-1]
    assert trip["cause"] == "trapped sleeper"
    since = h.island._distress_eps[-1][0]
    assert trip["condition_since"] == pytest.approx(since + h.cfg.distress_max_s, abs=0.05)
    assert any(e["event"] == "release" for e in h.island.log)
    assert h.violations == []


def test_distress_that_began_under_stimulation_trips_at_the_next_request():
    h = Harness()
    h.advance(60.0)
    assert h.request(20.0, 0.2, modality="haptic")  # stimulation going on...
    h.advance(1.0)
    _distressed(h)  # ...when the heart began to race: the stimulation may be the cause
    assert not h.request(20.0, 0.2, modality="haptic")
    h.advance(0.01)
    assert h.island.trips[-1]["cause"] == "distress under stimulation"
    assert h.violations == []


def test_campaign_has_no_violations():
    out = campaign(40)
    assert out["violations"] == 0 and out["kill_latency_ms"]["max"] <= 10.0


def _run(tmp_path, scenario, capsys):
    out = tmp_path / scenario
    code = main(
        [
            "-q",
            "simulate",
            "--hours",
            "0.1",
            "--scenario",
            scenario,
            "--out",
            str(out),
            "--no-report",
        ]
    )
    capsys.readouterr()
    assert code == 0
    return [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]


def _trip(events, holds_from, holds_by):
    """The first trip, checked against times the test knows on its own (the scenario's
    injections, the runner's requests), not only against the island's own record: the
    condition could not hold before ``holds_from`` and surely held by ``holds_by``, so the
    interlock opened in ``[holds_from, holds_by + T_react]``; the island really acted then
    (``acted_t``: when its timer ran, which a starved timer cannot back-date)."""
    trips = [e for e in events if e["kind"] == "safety" and e["event"] == "trip"]
    assert trips
    t = trips[0]
    assert {"cause", "condition_since", "opened_t", "acted_t"} <= set(t)
    assert holds_from <= t["opened_t"] <= holds_by + T_REACT, (t, holds_from, holds_by)
    assert t["acted_t"] <= t["opened_t"] + 1e-9
    assert t["opened_t"] - t["condition_since"] <= T_REACT
    late = [e for e in events if e["kind"] == "stim" and e["delivered"] and e["t"] > t["t"]]
    assert late == []  # nothing delivered after the trip
    return t


def _requests(events, after=0.0):
    """Times at which the runner asked the island for a stimulus, from its own log (a
    stim event's ``t`` is the onset; the request is an output latency earlier)."""
    asked = [
        e["t"] - AUDIO_LATENCY
        for e in events
        if e["kind"] == "stim"
        and e["reason"] not in ("late", "sham")
        and not str(e["reason"]).startswith("withheld")
    ]
    return [t for t in asked if t >= after]


def test_nightmare_glitch_frees_the_trapped_sleeper(tmp_path, capsys):
    events = _run(tmp_path, "nightmare-glitch", capsys)
    trapped = next(e for e in events if e["kind"] == "world" and e["event"] == "trapped")
    # The heart races from the nightmare's start, a second after the third stimulus; the
    # island confirms distress within 8 s (a median of five R-R intervals, then five fast
    # beats): the glitch's next request after that is a stimulus into distress that began
    # under stimulation.
    by = _requests(events, after=trapped["t"] + 8.0)[0]
    trip = _trip(events, trapped["t"], by)
    assert trip["cause"] == "distress under stimulation"
    released = next(e for e in events if e["kind"] == "world" and e["event"] == "released")
    assert released["t"] > trip["t"]
    assert any(e.get("event") == "release_cue" for e in events)


@pytest.mark.parametrize(
    ("scenario", "cause"),
    [
        ("app-hang", "watchdog: acquisition missing"),
        ("flood", "repeated limit breach"),
        ("electrode-off", "bad signal under stimulation"),
        ("wake-button", "wake button"),
    ],
)
def test_fault_scenarios_trip(tmp_path, capsys, scenario, cause):
    events = _run(tmp_path, scenario, capsys)
    cfg = SafetyConfig()
    if scenario == "app-hang":  # hangs at 120 s: the window closes window_max_s later
        holds_from, holds_by = 120.0, 120.0 + cfg.window_max_s
    elif scenario == "flood":  # from 60 s: the per-minute limit, then breach_trip_count
        n = cfg.limits.max_per_minute + cfg.breach_trip_count
        holds_from, holds_by = 60.0, _requests(events, after=60.0)[n - 1]
    elif scenario == "electrode-off":  # leads off at 90 s: the next request after it
        holds_from = 90.0
        holds_by = _requests(events, after=90.0 + 8 / 250.0)[0]
    else:  # wake-button: pressed at 100 s
        holds_from = holds_by = 100.0
    assert _trip(events, holds_from, holds_by)["cause"] == cause
    if scenario == "wake-button":
        kinds = [e["event"] for e in events if e["kind"] == "safety"]
        assert "rearm_refused" in kinds and "rearm" in kinds


@pytest.mark.parametrize("scenario", ["app-hang", "flood"])
def test_the_island_timer_alone_opens_the_interlock_in_time(scenario):
    """S5: a hung application spinning on the core, or one flooding the port, cannot
    starve the island. The firmware loop never polls the island: its own timer opens the
    interlock, and the interlock records when open() was really called, so a timer that
    does not run cannot hide behind a back-dated ``opened_t``."""
    config = RunConfig(source="sleeper://?hours=0.1", seed=1, scenario=scenario, record=False)
    source = open_configured_source(config)
    try:
        night = Night(config, source)
        result = night.run()
    finally:
        source.close()
    lock = night.island._lock
    assert lock.openings, "the island never opened the interlock"
    for (opened, _closed), called in zip(lock.openings, lock.open_calls, strict=True):
        assert opened - 1e-9 <= called <= opened + 1e-9
    first = lock.openings[0][0]
    if scenario == "app-hang":
        assert 120.0 <= first <= 120.0 + SafetyConfig().window_max_s + T_REACT
    else:
        asked = [e for e in result.events if e["kind"] == "stim" and e["t"] > 60.0]
        assert len(asked) > 100  # the flood went on after the trip, all of it refused
        assert not any(e["delivered"] for e in asked if e["t"] > first + AUDIO_LATENCY)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_clas_nights_never_trip_the_island(seed):
    """The honest application never gets near a trip condition on a whole virtual night."""
    from sim.runner import RunConfig, run_night

    result = run_night(RunConfig(seed=seed, record=False))
    assert result.summary["safety"]["trips"] == 0
    assert result.summary["stimuli"]["delivered"] > 300

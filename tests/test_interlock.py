"""The first interlock: limits refuse (never clip), trips latch, re-arm needs the token."""

from __future__ import annotations

import pytest

from hal.base import Stimulus, Transducer, UserInputError
from hal.interlock import HARD_CEILINGS, Interlock, Limits, check_limits

SFREQ = 250.0


def make(**limits):
    speaker = Transducer("audio", 0.015)
    lock = Interlock({"audio": speaker}, Limits(**limits), rearm_token="secret", sfreq=SFREQ)
    return lock, speaker


def pulse(t_s, level=50.0, duration=0.05):
    return Stimulus(round(t_s * SFREQ), "audio", level, duration, "test")


def test_delivers_within_limits():
    lock, speaker = make()
    assert lock.request(pulse(1.0), 1.0).delivered
    assert len(speaker.emitted) == 1


def test_refuses_and_logs_beyond_a_limit_without_clipping():
    lock, speaker = make(max_level_db=55.0)
    verdict = lock.request(pulse(1.0, level=58.0), 1.0)
    assert not verdict.delivered and "max_level_db" in verdict.reason
    assert speaker.emitted == []  # not played at 55 dB either: refused, never clipped
    assert lock.log[-1]["event"] == "limit"


def test_rate_limit_over_a_sliding_minute():
    lock, speaker = make(max_per_minute=3)
    verdicts = [lock.request(pulse(t), t).delivered for t in (0, 10, 20, 30, 61)]
    assert verdicts == [True, True, True, False, True]


def test_nightly_dose():
    lock, _ = make(max_per_night=2, max_per_minute=30)
    assert [lock.request(pulse(t), t).delivered for t in (0, 100, 200)] == [True, True, False]


def test_trip_latches_until_rearm_with_the_token():
    lock, speaker = make()
    lock.trip("host kill", 5.0)
    assert not lock.request(pulse(6.0), 6.0).delivered
    assert not lock.rearm("guess", 7.0) and lock.tripped
    assert lock.log[-1]["event"] == "rearm_refused"
    assert not lock.request(pulse(8.0), 8.0).delivered
    assert lock.rearm("secret", 9.0) and not lock.tripped
    assert lock.request(pulse(10.0), 10.0).delivered
    assert len(speaker.emitted) == 1


def test_limits_beyond_hard_ceilings_are_refused():
    with pytest.raises(UserInputError, match="max_level_db.*60.0.*got 75"):
        check_limits(Limits(max_level_db=75))
    with pytest.raises(UserInputError, match="max_per_minute"):
        check_limits(Limits(max_per_minute=0))
    assert check_limits(HARD_CEILINGS) == HARD_CEILINGS

"""The interlock: a latched gate with hard ceilings; the island is its only controller."""

from __future__ import annotations

import pytest

from hal.base import Stimulus, Transducer, UserInputError
from hal.interlock import HARD_CEILINGS, Interlock, Limits, check_limits

SFREQ = 250.0


def pulse(t_s, level=50.0, duration=0.05, modality="audio"):
    return Stimulus(round(t_s * SFREQ), modality, level, duration, "test")


def make():
    speaker, led = Transducer("audio", 0.015), Transducer("light", 0.002)
    heard = []
    lock = Interlock({"audio": speaker, "light": led}, lambda s, t, cue: heard.append((t, cue)))
    return lock, speaker, led, heard


def test_emits_while_closed_and_tells_the_world():
    lock, speaker, _, heard = make()
    assert lock.emit(pulse(1.0), 1.0)
    assert len(speaker.emitted) == 1 and heard == [(1.0, False)]


def test_refuses_beyond_the_hard_ceilings_without_clipping():
    lock, speaker, _, _ = make()
    assert not lock.emit(pulse(1.0, level=61.0), 1.0)
    assert not lock.emit(pulse(1.0, duration=1.5), 1.0)
    assert not lock.emit(pulse(1.0, level=float("nan")), 1.0)
    assert speaker.emitted == []


def test_open_latches_and_only_the_release_path_passes():
    lock, speaker, led, _ = make()
    lock.open(5.0)
    assert not lock.emit(pulse(6.0), 6.0) and speaker.emitted == []
    assert lock.cue(pulse(6.0, level=10.0, modality="light"), 6.0)  # the wake cue
    assert not lock.cue(pulse(6.0, level=50.0, modality="light"), 6.0)  # too bright
    assert not lock.cue(pulse(6.0), 6.0)  # never sound
    assert lock.was_open(5.5) and not lock.was_open(4.0)
    lock.close(9.0)
    assert lock.emit(pulse(10.0), 10.0)
    assert lock.openings == [[5.0, 9.0]]


def test_limits_beyond_hard_ceilings_are_refused():
    with pytest.raises(UserInputError, match="max_level_db.*60.0.*got 75"):
        check_limits(Limits(max_level_db=75))
    with pytest.raises(UserInputError, match="max_per_minute"):
        check_limits(Limits(max_per_minute=0))
    assert check_limits(HARD_CEILINGS) == HARD_CEILINGS

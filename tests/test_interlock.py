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


def test_emits_while_closed_and_tells_the_world_at_the_onset():
    lock, speaker, _, heard = make()
    assert lock.emit(pulse(1.0), 1.0)
    assert lock.in_flight() and speaker.emitted == [] and heard == []  # 15 ms in flight
    assert lock.next_onset() == pytest.approx(1.015)
    assert lock.settle(1.01) == []
    assert [o.at for o in lock.settle(1.015)] == [pytest.approx(1.015)]
    assert len(speaker.emitted) == 1 and heard == [(pytest.approx(1.015), False)]
    assert lock.outputs[0].t == 1.0 and not lock.in_flight()


def test_an_opening_cuts_the_pulses_in_flight():
    """S1 at the transducer: passed at 2.000 s (audio, onset 2.015 s), the interlock opens
    at 2.0022 s: the pulse never reaches the speaker nor the world, even if the gate is
    closed again before its onset. A pulse whose onset came before the opening did."""
    lock, speaker, led, heard = make()
    assert lock.emit(pulse(2.0), 2.0)  # audio: onset 2.015
    assert lock.emit(pulse(2.0, level=10.0, modality="light"), 2.0)  # light: onset 2.002
    lock.open(2.0022, now=2.0022)
    assert [o.stimulus.modality for o in lock.outputs] == ["light"]  # reached at 2.002
    assert [o.stimulus.modality for o in lock.cut] == ["audio"]
    assert lock.was_cut(lock.cut[0].stimulus) and not lock.in_flight()
    lock.close(2.005)
    assert lock.settle(3.0) == []
    assert speaker.emitted == [] and len(led.emitted) == 1 and len(heard) == 1
    assert lock.open_calls == [2.0022]


def test_an_opening_at_the_very_onset_cuts():
    lock, speaker, _, _ = make()
    assert lock.emit(pulse(1.0), 1.0)
    onset = lock.next_onset()
    lock.open(onset)
    assert lock.settle(onset + 1.0) == [] and speaker.emitted == [] and len(lock.cut) == 1


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
    assert lock.open_calls == [5.0]  # called at the time it records
    lock.open(11.0, now=11.5)  # a controller that acted late cannot hide it
    assert lock.openings[-1] == [11.0, None] and lock.open_calls[-1] == 11.5


def test_limits_beyond_hard_ceilings_are_refused():
    with pytest.raises(UserInputError, match="max_level_db.*60.0.*got 75"):
        check_limits(Limits(max_level_db=75))
    with pytest.raises(UserInputError, match="max_per_minute"):
        check_limits(Limits(max_per_minute=0))
    assert check_limits(HARD_CEILINGS) == HARD_CEILINGS

"""S1-S6 as Hypothesis properties: an adversarial application, a faulty world, time.

The world is :class:`bench.safety.Harness` (the island, its own timer, the DMA, the host
and the wake button, and an oracle of S1-S6). Rules are everything an adversary controls;
the invariant checks every guarantee after every step. A tripped island is re-armed by
the host often (and the application restarted), so runs go on past their first trip
instead of sitting latched, where no rule can matter any more.

``test_each_trip_cause_is_met_within_t_react`` drives every trip condition on purpose,
each with explicit examples that always run: a safety rule deleted from the island fails
there every time, not only when the machine happens to reach it.

Settings come from the profiles in ``conftest.py`` (``ci`` by default,
``HYPOTHESIS_PROFILE=deep`` for thousands of runs); the machine runs at least
:data:`MACHINE_MIN_EXAMPLES` examples (more when the profile asks for more).
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from bench.safety import Harness, distress_episode
from firmware.safety import SafetyConfig

#: Fewest examples of the machine, whatever the profile: it is what finds a rule deleted
#: from the island among everything else (the ci profile's 60 -> 240, about 25 s on one
#: core; the deep profile's 5000 stay).
MACHINE_MIN_EXAMPLES = 240

TASKS = st.sampled_from(["acquisition", "dsp", "staging", "modulation", "rearm"])


class IslandMachine(RuleBasedStateMachine):
    """An application that may do anything through its port, a world that may fail."""

    h: Harness

    @initialize(
        clock_ppm=st.floats(-1000, 1000),
        adc_ppm=st.floats(-1000, 1000),
        offset=st.floats(0, 0.001),
    )
    def start(self, clock_ppm, adc_ppm, offset):
        self.h = Harness(SafetyConfig(staging_start_s=0.0), clock_ppm, adc_ppm, offset)
        self.nonce = 0

    # -- time ---------------------------------------------------------------------------------
    @rule(dt=st.sampled_from([0.0005, 0.01, 0.3, 1.0, 1.7, 5.0, 31.0, 70.0]))
    def advance(self, dt):
        self.h.advance(dt)

    # -- the adversarial application ----------------------------------------------------------
    @rule(
        level=st.floats(0, 130, allow_nan=False),
        duration=st.floats(0.001, 2.0),
        modality=st.sampled_from(["audio", "light", "haptic"]),
        check_in=st.booleans(),
    )
    def request(self, level, duration, modality, check_in):
        self.h.request(level, duration, modality, check_in)

    @rule(n=st.integers(5, 80))
    def flood(self, n):
        for _ in range(n):
            self.h.request(50.0, 0.05)

    @rule(task=TASKS, offset=st.integers(-3, 3))
    def bad_check_in(self, task, offset):
        self.h.bad_check_in(task, offset)

    @precondition(lambda self: not self.h.hung)
    @rule()
    def hang(self):
        self.h.hang()

    @rule(n=st.integers(1, 4), every=st.sampled_from([0.1, 0.3, 0.45]))
    def fast_loop(self, n, every):
        """A looping application checks in too often, sequence numbers correct."""
        self.h.fast_loop(n, every)

    @rule(gaps=st.lists(st.sampled_from([0.1, 0.6, 1.024, 1.5, 1.7, 2.5]), min_size=1, max_size=4))
    def bulk_periods(self, gaps):
        """Period check-ins handed over in bulk, stamped ahead, maybe outside the window."""
        self.h.bulk_periods(gaps)

    @rule()
    def rearm_through_the_port(self):
        self.h.app_rearm_attempt()

    # -- outside the firmware -----------------------------------------------------------------
    @rule()
    def kill(self):
        self.h.kill()

    @rule(hold=st.sampled_from([0.1, 5.5]))
    def button(self, hold):
        self.h.press(hold)

    @rule(good=st.booleans(), replay=st.booleans())
    def host_rearm(self, good, replay):
        self.nonce = self.nonce if replay else self.nonce + 1
        self.h.host_rearm(self.nonce, good)

    @precondition(lambda self: self.h.island.tripped)
    @rule(restart=st.booleans(), settle=st.sampled_from([0.002, 0.5, 2.0]))
    def host_rearms_and_restarts(self, restart, settle):
        """The host re-arms a tripped island (good key, fresh nonce); maybe it restarts
        the application too (a hung one runs again). Runs stay armed and go on."""
        self.h.advance(settle)  # a trip still pending opens first
        self.nonce += 1
        self.h.host_rearm(self.nonce, True)
        if restart:
            self.h.restart_app()

    # -- the world ----------------------------------------------------------------------------
    @rule(on=st.booleans())
    def lead_off(self, on):
        self.h.lead_off = on

    @rule(on=st.booleans())
    def stuck_adc(self, on):
        self.h.stuck = on

    @rule(on=st.booleans())
    def arousal(self, on):
        self.h.moving = on

    @rule(
        moves=st.lists(
            st.tuples(st.sampled_from([0.5, 1.0, 3.0]), st.sampled_from([4.0, 9.0, 12.0])),
            min_size=2,
            max_size=4,
        )
    )
    def trapped(self, moves):
        """A stimulus, the sleeper moves, goes still; again (the trapped-sleeper pattern)."""
        for moving_s, still_s in moves:
            self.h.request(50.0, 0.05)
            self.h.moving = True
            self.h.advance(moving_s)
            self.h.moving = False
            self.h.advance(still_s)

    @rule(hr=st.sampled_from([55.0, 60.0, 100.0]))
    def distress(self, hr):
        self.h.hr = hr

    @rule(lead=st.sampled_from([1.5, 3.0, 6.0]), wait=st.sampled_from([8.0, 12.0, 20.0]))
    def distress_under_stimulation(self, lead, wait):
        """A stimulus, the heart races soon after, then a request into that distress."""
        self.h.advance(60.0)  # a calm heart long enough for the island's baseline
        distress_episode(self.h, lead, wait)

    @rule(n=st.integers(1, 30))
    def drop_blocks(self, n):
        self.h.drop_next = n

    @invariant()
    def guarantees_hold(self):
        if hasattr(self, "h"):
            self.h.check()
            assert self.h.violations == []


TestIsland = IslandMachine.TestCase
TestIsland.settings = settings(
    settings.default, max_examples=max(MACHINE_MIN_EXAMPLES, settings.default.max_examples)
)


# -- every trip cause, on purpose -----------------------------------------------------------
def _bad_signal(h):
    h.lead_off = True
    h.advance(1.0)
    h.request(50.0, 0.05)


def _stuck_adc(h):
    h.stuck = True
    h.advance(1.0)
    h.request(50.0, 0.05)


def _arousal(h):
    h.request(50.0, 0.05)
    h.moving = True
    h.advance(6.0)
    h.request(50.0, 0.05)


def _trapped(h):
    for _ in range(4):
        h.request(50.0, 0.05)
        h.moving = True
        h.advance(1.0)
        h.moving = False
        h.advance(12.0)


def _distress(h):
    h.advance(60.0)
    distress_episode(h, 3.0, 10.0)


def _hang(h):
    h.hang()
    h.advance(3.0)


def _fast_app(h):
    h.fast_loop(3, 0.1)


def _late_bulk(h):
    h.bulk_periods([0.5, 1.0, 1.8])


def _kill(h):
    h.kill()


def _kill_in_flight(h):
    h.request(50.0, 0.05)  # audio: in flight for 15 ms
    h.advance(0.002)
    h.kill()  # the pulse must be cut before its onset (S1 at the transducer)


def _button(h):
    h.press(0.1)


def _limit_breach(h):
    for _ in range(3):
        h.request(70.0, 0.05)


def _no_check_in(h):
    h.request(50.0, 0.05, check_in=False)


def _bad_check_in(h):
    h.bad_check_in("dsp", 1)  # a dsp check-in with no acquisition before it


def _unknown_check_in(h):
    h.bad_check_in("rearm", 0)


CAUSES = {
    "bad signal": _bad_signal,
    "stuck converter": _stuck_adc,
    "arousal": _arousal,
    "trapped sleeper": _trapped,
    "distress under stimulation": _distress,
    "hung app": _hang,
    "early check-in": _fast_app,
    "late check-in": _late_bulk,
    "host kill": _kill,
    "host kill in flight": _kill_in_flight,
    "wake button": _button,
    "limit breach": _limit_breach,
    "request without check-in": _no_check_in,
    "check-in out of order": _bad_check_in,
    "unknown check-in": _unknown_check_in,
}


def _cause_examples(test):
    for cause in sorted(CAUSES):
        for rearmed in (False, True):
            test = example(
                cause=cause, clock_ppm=0.0, adc_ppm=0.0, offset=0.0, lead=2.0, rearmed=rearmed
            )(test)
    return test


@_cause_examples
@given(
    cause=st.sampled_from(sorted(CAUSES)),
    clock_ppm=st.floats(-1000, 1000),
    adc_ppm=st.floats(-1000, 1000),
    offset=st.floats(0, 0.001),
    lead=st.floats(1.0, 40.0),
    rearmed=st.booleans(),
)
def test_each_trip_cause_is_met_within_t_react(cause, clock_ppm, adc_ppm, offset, lead, rearmed):
    """Each trip condition, made to hold on purpose (after a trip and a host re-arm when
    ``rearmed``): the interlock opened, and the oracle found no violation (had the island
    not tripped, the oracle's deadline for the condition would have failed S2). A safety
    rule deleted from the island fails here on the explicit examples."""
    h = Harness(SafetyConfig(staging_start_s=0.0), clock_ppm, adc_ppm, offset)
    h.advance(lead)
    if rearmed:
        h.kill()
        h.advance(0.5)
        h.host_rearm(1, True)
        h.advance(1.5)
        assert not h.island.tripped
    n_trips = len(h.island.trips)
    CAUSES[cause](h)
    # Past every deadline the oracle set (a bulk check-in is stamped ahead).
    h.advance(max([0.05] + [d - h.now + 0.01 for d, _ in h.deadlines]))
    assert h.violations == []
    assert len(h.island.trips) > n_trips and h.island.interlock_open, cause

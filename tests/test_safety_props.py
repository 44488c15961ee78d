"""S1-S6 as Hypothesis properties: an adversarial application, a faulty world, time.

The world is :class:`bench.safety.Harness` (the island, its own timer, the DMA, the host
and the wake button, and an oracle of S1-S6). Rules are everything an adversary controls;
the invariant checks every guarantee after every step. Settings come from the profiles in
``conftest.py`` (``ci`` by default, ``HYPOTHESIS_PROFILE=deep`` for thousands of runs).
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from bench.safety import Harness
from firmware.safety import SafetyConfig

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

    @rule(n=st.integers(1, 30))
    def drop_blocks(self, n):
        self.h.drop_next = n

    @invariant()
    def guarantees_hold(self):
        if hasattr(self, "h"):
            self.h.check()
            assert self.h.violations == []


TestIsland = IslandMachine.TestCase

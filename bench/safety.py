"""Fault-injection campaign for the safety island, and the lean full loop it runs.

``python -m bench.safety --scenarios N --json`` runs N seeded randomized scenarios. Each
is a full loop — the island (:mod:`firmware.safety`) with its own timer, an application
that checks in and asks for stimuli through its port (honest, then faulty: hangs, floods,
over-limit requests, skipped/early/reordered check-ins, a fast loop checking in too often,
check-ins handed over in bulk outside their window, re-arm attempts through its port), a
world that sends DMA blocks with signals and faults (lead-off, stuck ADC, dropped blocks,
arousal movement, distress heart rate, distress soon after a stimulus), the host (kill,
re-arm, restarting the application) and the wake button — with an oracle that checks
S1-S6 after every step, S1 at the onset at the transducer (a pulse is in flight for the
output latency) and S5 on the interlock's record of when it was really opened. Its last
line is one JSON object: ``scenarios``, ``violations``, ``kill_latency_ms`` {min, p50,
p99, max}, ``trips`` by cause.

:class:`Harness` is also the world of the Hypothesis proof (``tests/test_safety_props.py``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time

import numpy as np

from bench._json import json_line
from firmware.safety import SLEEPER_CAUSES, SafetyConfig, SafetyIsland, rearm_frame
from hal.base import Stimulus, Transducer
from hal.interlock import Limits

logger = logging.getLogger("bench.safety")

SFREQ = 250.0
BLOCK = 8
ROLES = ("eeg", "emg", "ecg", "accel")
KEY = b"board-secret"
#: Blocks the world sends per delivery (about 1 s; an action of the app or the outside
#: first delivers what arrived by then).
CHUNK_BLOCKS = 32
#: The island's oscillator may be off by this much (1000 ppm): a window is surely missed
#: only beyond it.
CLOCK_TOL = 1e-3
#: Heart rates the world uses: at or above RACING the heart is surely in distress against a
#: calm baseline, at or below CALM it is calm.
RACING_BPM, CALM_BPM = 90.0, 61.0


def level_limit(limits: Limits, modality: str) -> float:
    """The oracle's own table of the level limit of each modality."""
    return {
        "audio": limits.max_level_db,
        "light": limits.max_light_pct,
        "haptic": limits.max_haptic_pct,
    }[modality]


class Harness:
    """The island in a lean full loop, with the oracle of S1-S6.

    Parameters
    ----------
    config : SafetyConfig
        The island's configuration.
    clock_ppm : float
        Error of the island's oscillator.
    adc_ppm : float
        Error of the device's sample clock (the application's time base).
    clock_offset_s : float
        Phase of the island's tick grid.
    """

    def __init__(
        self,
        config: SafetyConfig | None = None,
        clock_ppm: float = 0.0,
        adc_ppm: float = 0.0,
        clock_offset_s: float = 0.0,
    ) -> None:
        self.cfg = config or SafetyConfig(staging_start_s=0.0)
        self.transducers = {
            "audio": Transducer("audio", 0.015),
            "light": Transducer("light", 0.002),
            "haptic": Transducer("haptic", 0.02),
        }
        self.island = SafetyIsland(
            dict(self.transducers),
            self.cfg,
            KEY,
            ROLES,
            sfreq=SFREQ,
            clock_offset_s=clock_offset_s,
            clock_ppm=clock_ppm,
        )
        self.port = self.island.port()
        self.lock = self.island._lock  # the proof reads the hardware record
        self.now = 0.0
        self.rate = SFREQ * (1 + adc_ppm * 1e-6)
        # The honest application's schedule (it may be told to misbehave).
        self.hung = False
        self.period = 0
        self.epoch = 0
        self.mod_seq = 0
        self.period_true_s = round(self.cfg.period_s * SFREQ) / self.rate
        self.next_acq_t = self.period_true_s  # the next acquisition/dsp check-in
        self.next_stage_t = self.cfg.staging_start_s + 30.0
        self.next_block = 0  # next sample index the world sends
        # World state.
        self.lead_off = False
        self.stuck = False
        self._moving = False
        self.moving_since: float | None = None  # movement without a dropped block since
        self._last_moving_send = -math.inf  # last delivery of blocks with movement in
        self._new_movement = False  # moving, and no block of it delivered yet
        self._delivered: list[float] = []  # times of delivered stimuli
        self._sure_attempts: list[float] = []  # attempts the island must count (send times)
        self.hum_uv = 0.0  # 50-Hz mains hum on the chin lead (not a sleeper waking)
        # The heart (see the ``hr`` property): when it began to race, when the calm stretch
        # before that began, when it first raced, when the DMA last lost blocks.
        self._hr = 60.0
        self._race_since: float | None = None
        self._calm_since: float | None = 0.0
        self._calm_before_race: float | None = None
        self._first_race: float | None = None
        self._last_drop_t = -math.inf
        # The ECG lead: gain (negative: an inverted lead), T wave and baseline wander (µV).
        self.ecg_gain = 1.0
        self.ecg_t_uv = 0.0
        self.ecg_wander_uv = 0.0
        self.drop_next = 0
        self.last_block_bad = False
        self._seen_bad = False
        self._resynced = False
        self._resynced_staging = False
        self._resynced_mod = False
        self.armed = 0
        self._nonce = -1
        self._checked = 0
        self._beat_phase = 0.0
        # Oracle state.
        self.deadlines: list[tuple[float, str]] = []  # (open by, why)
        self.valid_rearms: list[float] = []
        self.limit_refusals = 0
        self.breaches: list[float] = []
        self.requests_refused_ok = 0
        self.last_acq_true = 0.0
        self.violations: list[str] = []

    # ---------------------------------------------------------------- time
    def _next_period_t(self) -> float:
        return self.next_acq_t

    def _next_stage_t(self) -> float:
        return self.next_stage_t

    def _next_block_t(self) -> float:
        return (self.next_block + CHUNK_BLOCKS * BLOCK) / self.rate

    def advance(self, dt: float) -> None:
        """Let ``dt`` seconds pass: the island's timer, the transducers (pulses in flight
        reach them at their onsets), the app's tasks and the DMA run. The island's timer
        goes first at a tie: it is what the proof is about."""
        target = self.now + dt
        while True:
            wake = self.island.next_wake()
            onset = self.lock.next_onset()
            app_t = math.inf if self.hung else min(self._next_period_t(), self._next_stage_t())
            blk = self._next_block_t()
            t = min(wake, onset, app_t, blk)
            if t > target:
                break
            self.now = max(self.now, t)
            if t == wake:
                self.island.poll(t)
            elif t == onset:
                if self._blocks_arrived(t):  # what the island would know by then, first
                    self._send_blocks(self._blocks_arrived(t))
                    continue
                self.island.settle(t)
            elif t == blk:
                self._send_blocks()
            elif t == app_t:
                if app_t == self._next_period_t():
                    self._period_check_in(t)
                else:
                    self._resynced_staging = False
                    self.port.check_in("staging", self.epoch, t)
                    self.epoch += 1
                    self.next_stage_t = t + 30.0
        self.now = target
        self.island.poll(target)
        self.island.settle(target)
        self.check()

    def _period_check_in(self, t: float) -> None:
        """The app's ``acquisition`` then ``dsp`` check-in at ``t``, in sequence; the next
        one is due a period later. The oracle knows the window: a check-in surely early
        (after the previous one, unless the first after a re-arm) or surely late trips."""
        self._catch_up()
        self._period_oracle([t])
        self.port.check_in("acquisition", self.period, t)
        self._timer_to(t + 1e-4)  # the dsp task checks in a little later
        self.port.check_in("dsp", self.period, t + 1e-4)
        self._periods_done([t])

    def _period_oracle(self, times: list[float]) -> None:
        cfg = self.cfg
        last, resynced = self.last_acq_true, self._resynced
        for t in times:
            gap = t - last
            if not resynced and gap * (1 + CLOCK_TOL) < cfg.window_min_s:
                self._must_open(t, f"acquisition early ({gap:.3f} s)")
            if gap * (1 - CLOCK_TOL) > cfg.window_max_s:  # the window closed before it
                self._must_open(last + cfg.window_max_s * (1 + CLOCK_TOL), "acquisition late")
            last, resynced = t, False

    def _periods_done(self, times: list[float]) -> None:
        self._resynced = False
        self.period += len(times)
        self.last_acq_true = times[-1]
        self.next_acq_t = times[-1] + self.period_true_s

    def _blocks_arrived(self, t: float) -> int:
        """Blocks that have arrived by ``t`` and were not sent yet."""
        return max(0, math.floor((t * self.rate - self.next_block) / BLOCK + 1e-6))

    def _catch_up(self) -> None:
        """Before the app or the outside acts: the DMA delivers the blocks that arrived by
        now (the world sends them in chunks only for speed) and the island's timer does
        what became due, each at its time, as if every block had come on time."""
        k = self._blocks_arrived(self.now)
        if k:
            self._send_blocks(k)
        self._timer_to(self.now)

    def _timer_to(self, t: float) -> None:
        """The island's timer fires at each of its deadlines up to ``t``."""
        while (wake := self.island.next_wake()) <= t:
            self.island.poll(wake)

    def _send_blocks(self, n_blocks: int = CHUNK_BLOCKS) -> None:
        n = n_blocks * BLOCK
        start = self.next_block
        self.next_block += n
        self.last_block_bad = self.lead_off or self.stuck
        if self.drop_next > 0:  # the DMA lost these blocks
            self._last_drop_t = self.now
            self.moving_since = None  # the island may not have seen this movement whole
            self._sure_attempts = []  # nor these attempts
            self.last_block_bad = self._seen_bad
            self.drop_next -= 1
            return
        idx = start + np.arange(n)
        t = idx / self.rate
        data = np.zeros((4, n))
        flags = np.zeros((4, n), dtype=np.uint8)
        data[0] = 20.0 * np.sin(2 * np.pi * 0.9 * t) + np.sin(idx * 1.7)
        if self.stuck:
            data[0] = 123.0
        if self.lead_off:
            flags[0] = 2
            data[0] = 0.0
        data[1] = 5.0 * np.sin(idx * 2.3)
        if self.moving:  # movement and a chin-EMG burst (about 44 Hz, 150 µV)
            data[3] = 0.12
            data[1] += 150.0 * np.sin(idx * 1.1)
        if self.hum_uv:
            hum = np.sin(2 * np.pi * 50.0 * t) + 0.15 * np.sin(2 * np.pi * 150.0 * t)
            data[1] += self.hum_uv * hum
        phase = self._beat_phase + np.arange(1, n + 1) * (self.hr / 60.0) / self.rate
        self._beat_phase = float(phase[-1])
        frac = phase - np.round(phase)
        data[2] = 1000.0 * np.exp(-0.5 * (frac / 0.012) ** 2)
        if self.ecg_t_uv:  # the T wave, a third of a beat after the R peak
            t_frac = phase - 0.3 - np.round(phase - 0.3)
            data[2] += self.ecg_t_uv * np.exp(-0.5 * (t_frac / 0.05) ** 2)
        data[2] *= self.ecg_gain
        if self.ecg_wander_uv:  # breathing and electrode drift
            data[2] += self.ecg_wander_uv * np.sin(2 * np.pi * 0.25 * t)
        times = (start + BLOCK * np.arange(1, n_blocks + 1)) / self.rate
        self.island.on_blocks(start, data, flags, times)
        if self._moving:
            self._movement_sent(self.now)
        self._seen_bad = self.last_block_bad
        # Bad signal is a condition only when a stimulus is asked for (see request()).

    @property
    def hr(self) -> float:
        """The heart rate (bpm) the world's ECG beats at."""
        return self._hr

    @hr.setter
    def hr(self, bpm: float) -> None:
        racing, calm = bpm >= RACING_BPM, bpm <= CALM_BPM
        if racing and self._race_since is None:
            self._race_since = self.now
            self._calm_before_race = self._calm_since
            if self._first_race is None:
                self._first_race = self.now
        if not racing:
            self._race_since = None
        if calm and self._calm_since is None:
            self._calm_since = self.now
        if not calm:
            self._calm_since = None
        self._hr = float(bpm)

    def _surely_distress_under_stimulation(self, t: float) -> bool:
        """The island must see, at ``t``, distress that began under stimulation.

        The heart raced from ``up`` after a calm stretch long enough for the island's
        warm-up and baseline (45 s; 240 s if it ever raced before, so a first racing
        heart cannot be the baseline), with no block lost from 15 s before ``up``. The
        island dates the episode from its last calm beat, within [up - 1.1 s, up + 2.5 s]
        (the median of five R-R intervals flips on the third fast one), and confirms it
        five fast beats later (by up + 6 s, + a delivery): at ``t >= up + 8 s`` it has. A
        stimulus delivered in [up - 7 s, up - 1.5 s] lies within ``stim_active_s``
        (10 s) before any such beginning: the distress began under stimulation.
        """
        up, calm0 = self._race_since, self._calm_before_race
        if up is None or calm0 is None or t < up + 8.0:
            return False
        warm = 240.0 if self._first_race is not None and self._first_race < calm0 else 45.0
        if up - calm0 < warm or self._last_drop_t >= up - 15.0:
            return False
        reach = self.cfg.stim_active_s - 3.0  # 7 s by default
        return any(up - reach <= s <= up - 1.5 for s in self._delivered)

    @property
    def moving(self) -> bool:
        """The sleeper moves (accelerometer and a chin-EMG burst in the blocks sent)."""
        return self._moving

    @moving.setter
    def moving(self, on: bool) -> None:
        if on and not self._moving:
            self.moving_since = self.now
            self._new_movement = True
        if not on:
            self.moving_since = None
            self._new_movement = False
        self._moving = bool(on)

    def _movement_sent(self, s: float) -> None:
        """The trapped-sleeper oracle, at a delivery ``s`` of blocks with movement in.

        The world writes the blocks of a delivery when it sends them, so a movement the
        island sees begins, in its blocks, within one delivery (``lag``) before the first
        send ``s`` of it. It is surely a new attempt when the previous movement's last
        send was more than ``attempt_gap_s + lag`` before, and surely under stimulation
        when the last delivered stimulus is less than ``stim_active_s`` before ``s``.
        ``trap_attempts`` such attempts within ``trap_window_s - lag`` must trip.
        """
        cfg = self.cfg
        lag = CHUNK_BLOCKS * BLOCK / self.rate
        new = self._new_movement
        separate = s - self._last_moving_send > cfg.attempt_gap_s + lag
        self._new_movement = False
        self._last_moving_send = s
        if not (new and separate):
            return
        if not (self._delivered and s - self._delivered[-1] < cfg.stim_active_s - 1e-6):
            return
        self._sure_attempts = [a for a in self._sure_attempts if a > s - cfg.trap_window_s]
        self._sure_attempts.append(s)
        first = self._sure_attempts[-cfg.trap_attempts :]
        if len(first) == cfg.trap_attempts and s - first[0] < cfg.trap_window_s - lag:
            self._must_open(s + lag + cfg.t_react_s, "trapped sleeper")

    def _surely_aroused(self, t: float) -> bool:
        """The island must see an arousal at ``t``: movement for ``arousal_min_s`` in the
        blocks that have surely arrived (a delivery takes CHUNK_BLOCKS blocks)."""
        if self.moving_since is None:
            return False
        seen_to = t - (CHUNK_BLOCKS + 1) * BLOCK / self.rate
        return seen_to - self.moving_since >= self.cfg.arousal_min_s

    # ---------------------------------------------------------------- the application
    def request(
        self, level: float, duration: float, modality: str = "audio", check_in: bool = True
    ) -> bool:
        """The application asks for a stimulus now (after its modulation check-in)."""
        self._catch_up()
        t = self.now
        before = self.island.tripped
        if check_in:
            self.port.check_in("modulation", self.mod_seq, t)
            self.mod_seq += 1
            self._resynced_mod = False
            self.armed += 1
        armed, self.armed = self.armed, max(0, self.armed - 1)
        stim = Stimulus(round(t * SFREQ) + 4, modality, level, duration, "adversary")
        v = self.port.request(stim, t)
        # S4: what was asked, against the oracle's own table of the limits. An over-limit
        # request comes back refused, never delivered (clipped or not), and what the gate
        # passed is exactly what was asked.
        lim = self.cfg.limits
        over = not level <= level_limit(lim, modality) or not 0 < duration <= lim.max_pulse_s
        if v.delivered and over:
            self.violations.append(
                f"S4: over-limit request {modality} {level}/{duration} came back delivered"
            )
        if v.delivered:
            flying = self.lock.in_flight()
            if not flying or flying[-1].stimulus != stim:
                self.violations.append(f"S4: the gate passed something else than {stim}")
        if v.reason.startswith("limit"):
            self.limit_refusals += 1
            self.breaches = [b for b in self.breaches if b > t - self.cfg.breach_window_s] + [t]
            if len(self.breaches) >= self.cfg.breach_trip_count:
                self._must_open(t, "repeated limit breach")
        if not before and armed == 0:
            self._must_open(t, "request without check-in")
        if not before and self._seen_bad and check_in and not v.reason.startswith("limit"):
            self._must_open(t, "stimulus into bad signal")
        if not before and check_in and self._surely_aroused(t) and not v.reason.startswith("limit"):
            self._must_open(t, "stimulus into an arousal")
        if (
            not before
            and check_in
            and not v.reason.startswith("limit")
            and self._surely_distress_under_stimulation(t)
        ):
            self._must_open(t, "stimulus into distress that began under stimulation")
        if v.delivered:
            self._delivered.append(t)
        self.check()
        return v.delivered

    def bad_check_in(self, task: str, seq_offset: int) -> None:
        """A check-in out of order (or of an unknown task); ``acquisition`` in sequence is
        an unscheduled period check-in now (early, or on time)."""
        self._catch_up()
        t = self.now
        if task == "acquisition" and seq_offset == 0 and not self.hung:
            if self.last_acq_true <= t:  # not before check-ins handed over ahead
                self._period_check_in(t)
            self.check()
            return
        before = self.island.tripped
        seq = {
            "acquisition": self.period,
            "dsp": self.period - 1,
            "staging": self.epoch,
            "modulation": self.mod_seq,
        }.get(task, 0) + seq_offset
        self.port.check_in(task, seq, t)
        # Right after a re-arm the island accepts any later sequence number once (the app went
        # on counting while it was cut off): the model cannot call those wrong.
        resync = (
            (self._resynced and task in ("acquisition", "dsp"))
            or (self._resynced_staging and task == "staging")
            or (self._resynced_mod and task == "modulation")
        )
        if (
            not before
            and not resync
            and (seq_offset != 0 or task not in ("acquisition", "dsp", "staging", "modulation"))
        ):
            if task == "modulation" and seq_offset == 0:
                pass
            else:
                self._must_open(t, f"bad check-in {task}{seq_offset:+d}")
        if task == "acquisition" and not self.island.tripped:
            # Accepted: the watchdog's deadline now runs from this check-in.
            self.last_acq_true = t
            self.deadlines = [(d, w) for d, w in self.deadlines if not w.startswith("hang")]
            if self.hung:
                self._must_open(t + self.cfg.window_max_s * (1 + 1e-3), "hang")
        if task == "modulation" and (seq_offset == 0 or resync):
            self.mod_seq = seq + 1
            self.armed += 1
            self._resynced_mod = False
        self.check()

    def fast_loop(self, n: int, every_s: float = 0.1) -> None:
        """A looping application checks in every ``every_s`` with correct sequence numbers
        (``n`` times): early, which the windowed watchdog must trip on."""
        for _ in range(n):
            # After the check-ins handed over ahead (bulk_periods), never before them.
            self.advance(max(every_s, self.last_acq_true - self.now))
            if self.hung:
                return
            self._period_check_in(self.now)
            self.check()

    def bulk_periods(self, gaps: list[float]) -> None:
        """The app hands over the check-ins of the next periods in bulk (as the simulator
        does for blocks it accounts in bulk), stamped at future times ``gaps`` apart (the
        first ``gaps[0]`` after now or after the last stamp handed over, whichever is
        later: time does not run backwards), sequence numbers correct. A gap surely outside the
        window trips: an early check-in at its stamp, a late one when the window closed
        (a late check-in must not be taken as on time, moving the window on)."""
        if self.hung or not gaps:
            return
        self._catch_up()
        times = list(np.cumsum(gaps) + max(self.now, self.last_acq_true))
        self._period_oracle(times)
        self.port.check_in_periods(self.period, times, [x + 1e-4 for x in times])
        self._periods_done(times)
        self.check()

    def restart_app(self) -> None:
        """After a re-arm the host restarts the application: it runs again from now (its
        sequence numbers go on; the island accepts any later one once)."""
        if self.island.tripped:
            return
        self.hung = False
        self.deadlines = [(d, w) for d, w in self.deadlines if not w.startswith("hang")]
        self.next_acq_t = self.now + self.period_true_s
        self.next_stage_t = self.now + 30.0
        self.check()

    def hang(self) -> None:
        """The application stops checking in (loops forever)."""
        if not self.hung and not self.island.tripped:
            win = self.cfg.window_max_s
            # Windows are on the island's clock: allow its drift (<= 1000 ppm).
            self._must_open(self.last_acq_true + win * (1 + 1e-3), "hang")
        self.hung = True

    def app_rearm_attempt(self) -> None:
        """The application forges a re-arm through its port (it has no other way)."""
        self._catch_up()
        self.port.message(rearm_frame(KEY, 10**9), self.now)
        self.port.message(b"REARM", self.now)
        self.check()

    # ---------------------------------------------------------------- outside the firmware
    def kill(self) -> None:
        """Host kill command."""
        self._catch_up()
        self._must_open(self.now, "kill")
        self.island.host_command(b"KILL", self.now)
        self.check()

    def host_rearm(self, nonce: int, good_key: bool) -> None:
        """Host re-arm command (maybe forged, maybe replayed)."""
        self._catch_up()
        was = self.island.interlock_open  # latched (a trip still pending is not re-armed)
        ok = self.island.host_command(rearm_frame(KEY if good_key else b"x", nonce), self.now)
        expected = good_key and nonce > self._nonce
        if ok != expected:
            self.violations.append(f"S3: re-arm nonce {nonce} key {good_key} answered {ok}")
        if ok:
            self._nonce = nonce
            if was:
                self.valid_rearms.append(self.now)
                self._rearmed()
        self.check()

    def press(self, hold_s: float) -> None:
        """The wake button, pressed for ``hold_s``."""
        self._catch_up()
        self._must_open(self.now, "button")
        t0 = self.now
        self.island.button(True, self.now)
        trips_before = [t["opened_t"] for t in self.island.trips]
        # The model's own rule: held long_press_s, the trip at least rearm_holdoff_s old.
        when = t0 + self.cfg.long_press_s
        rearm = (
            hold_s >= self.cfg.long_press_s
            and bool(trips_before)
            and when - trips_before[-1] >= self.cfg.rearm_holdoff_s
        )
        if rearm:
            self.valid_rearms.append(when)
        self.advance(hold_s)
        self.island.button(False, self.now)
        if rearm:
            self._rearmed()
        self.check()

    def _rearmed(self) -> None:
        # After a re-arm the app starts over from its current counters; conditions met
        # before it no longer bind.
        self.deadlines = []
        self.breaches = []
        self._sure_attempts = []
        self._resynced = self._resynced_staging = self._resynced_mod = True
        self.armed = 0
        if self.hung:
            self._must_open(self.now + self.cfg.window_max_s * (1 + 1e-3), "hang after re-arm")
        self.last_acq_true = self.now

    # ---------------------------------------------------------------- the oracle
    def _must_open(self, t: float, why: str) -> None:
        if not self.island.tripped:
            self.deadlines.append((t + self.cfg.t_react_s, why))

    def check(self) -> None:
        """Check S1-S6 against the record; append violations."""
        isl, cfg, v = self.island, self.cfg, self.violations
        outs = isl.outputs
        lock = self.lock
        stims = [o for o in outs if not o.cue]
        new = stims[self._checked :]
        self._checked = len(stims)
        # S1: nothing of the program reaches a transducer while open: not when it was
        # passed, not at its onset at the transducer, nor if the gate opened in between
        # (an opening cuts what is in flight, even if a re-arm closes the gate again).
        for o in new:
            if any(op <= o.at and (c is None or c > o.t) for op, c in lock.openings):
                v.append(f"S1: stimulus passed at {o.t} reached the transducer at {o.at} open")
        emitted = sum(len(tx.emitted) for tx in self.transducers.values())
        if emitted != len(outs):
            v.append("S1: a transducer was driven outside the interlock")
        # S5: the island acted when its record says (its timer was not starved): the
        # interlock records when open() was really called.
        for (op, _c), called in zip(lock.openings, lock.open_calls, strict=True):
            if called - op > 1e-9:
                v.append(f"S5: opened at {called}, recorded as {op}")
        # S2: every condition met is followed by an open interlock within T_react.
        for d, why in self.deadlines:
            if (
                d <= self.now
                and not lock.was_open(d)
                and not any(o <= d for o, c in lock.openings if c is None or c > d - cfg.t_react_s)
            ):
                v.append(f"S2: {why}: not open by {d}")
        for trip in isl.trips:
            if trip["opened_t"] - trip["condition_since"] > cfg.t_react_s + 1e-12:
                v.append(f"S2: trip latency {trip['opened_t'] - trip['condition_since']}")
        # S3: it closes only at an external re-arm.
        for _o, c in lock.openings:
            if c is not None and not any(abs(c - r) < 1e-12 for r in self.valid_rearms):
                v.append(f"S3: closed at {c} without an external re-arm")
        # S4: limits over every window; refusals logged.
        lim = cfg.limits
        if new:  # onsets at the transducers, in any 60-s window
            times = np.sort([o.at for o in stims])
            first = np.searchsorted(times, times - 60.0, side="right")
            if (np.arange(times.size) - first + 1 > lim.max_per_minute).any():
                v.append("S4: max_per_minute exceeded")
        if len(stims) > lim.max_per_night:
            v.append("S4: max_per_night exceeded")
        for o in new:
            s = o.stimulus
            top = level_limit(lim, s.modality)
            if s.level > top or s.duration > lim.max_pulse_s:
                v.append(f"S4: {s.modality} {s.level}/{s.duration} delivered beyond a limit")
        if sum(1 for e in isl.log if e["event"] == "limit") != self.limit_refusals:
            v.append("S4: a refusal was not logged")
        # S6: after a trip caused by the sleeper, the release cue plays; nothing else until
        # re-arm (S1 covers the latter).
        for trip in isl.trips:
            if trip["cause"].split(":")[0] not in SLEEPER_CAUSES or not cfg.release_cue:
                continue
            first_cue = trip["opened_t"] + cfg.release_delay_s
            closed = next((c for o, c in lock.openings if o == trip["opened_t"]), None)
            played = any(o.cue and abs(o.t - first_cue) < 1e-9 for o in outs)
            due = self.now > first_cue + 1e-9 and (closed is None or closed > first_cue)
            if due and not played:
                v.append(f"S6: no release cue after {trip['cause']} at {trip['opened_t']}")
        if v:
            # Keep one of each for the report; the first is what matters.
            self.violations = list(dict.fromkeys(v))

    def kill_latencies_ms(self) -> list[float]:
        """Condition-to-open time of every trip, ms."""
        return [1e3 * (t["opened_t"] - t["condition_since"]) for t in self.island.trips]


def trapped_episode(h: Harness, rng: np.random.Generator) -> None:
    """The glitch's pattern: a stimulus, the sleeper tries to wake, again and again."""
    for _ in range(int(rng.integers(2, 5))):
        h.request(50.0, 0.05)
        h.moving = True
        h.advance(float(rng.choice([0.5, 1.0, 3.0])))
        h.moving = False
        h.advance(float(rng.choice([4.0, 9.0, 12.0, 20.0])))


def distress_episode(h: Harness, lead_s: float = 3.0, wait_s: float = 10.0) -> None:
    """A stimulus, the heart races ``lead_s`` later, a request ``wait_s`` after that: the
    distress began under stimulation (S2). The heart calms again afterwards."""
    h.request(50.0, 0.05)
    h.advance(lead_s)
    h.hr = 100.0
    h.advance(wait_s)
    h.request(50.0, 0.05)
    h.advance(0.01)
    h.hr = 60.0


def run_scenario(seed: int, steps: int = 40) -> Harness:
    """One randomized scenario: seeded drift, world faults and application behaviour."""
    rng = np.random.default_rng(seed)
    h = Harness(
        SafetyConfig(staging_start_s=0.0),
        clock_ppm=float(rng.uniform(-500, 500)),
        adc_ppm=float(rng.uniform(-500, 500)),
        clock_offset_s=float(rng.uniform(0, 0.001)),
    )
    nonce = 0
    for _ in range(steps):
        r = rng.random()
        if r < 0.30:
            h.advance(float(rng.choice([0.01, 0.3, 1.0, 3.0, 20.0])))
        elif r < 0.50:
            h.request(
                float(rng.choice([40.0, 50.0, 55.0, 58.0, 70.0])),
                float(rng.choice([0.05, 0.2, 0.5])),
                check_in=bool(rng.random() < 0.9),
            )
        elif r < 0.55:
            for _ in range(int(rng.integers(5, 60))):
                h.request(50.0, 0.05)
        elif r < 0.60:
            h.bad_check_in(
                str(rng.choice(["acquisition", "dsp", "staging", "modulation", "rearm"])),
                int(rng.integers(-2, 3)),
            )
        elif r < 0.63:
            h.hang()
        elif r < 0.66:
            h.kill()
        elif r < 0.69:
            h.press(float(rng.choice([0.2, 6.0])))
        elif r < 0.74:
            nonce = nonce + 1 if rng.random() < 0.7 else max(0, nonce - 1)
            h.host_rearm(nonce, good_key=bool(rng.random() < 0.7))
            if rng.random() < 0.5:
                h.restart_app()
        elif r < 0.77:
            h.app_rearm_attempt()
        elif r < 0.82:
            h.lead_off = not h.lead_off
        elif r < 0.85:
            h.stuck = not h.stuck
        elif r < 0.88:
            h.moving = not h.moving
        elif r < 0.90:
            trapped_episode(h, rng)
        elif r < 0.93:
            h.hr = float(rng.choice([60.0, 95.0]))
        elif r < 0.95:
            distress_episode(h, float(rng.choice([1.5, 3.0, 6.0])), float(rng.choice([8.0, 12.0])))
        elif r < 0.97:
            h.drop_next = int(rng.integers(1, 20))
        elif r < 0.985:
            h.fast_loop(int(rng.integers(1, 5)), float(rng.choice([0.1, 0.3])))
        else:
            h.bulk_periods([float(x) for x in rng.choice([0.1, 0.6, 1.024, 1.5, 1.7, 2.5], 3)])
    h.advance(2.0)
    return h


def campaign(n: int, seed: int = 0) -> dict:
    """Run ``n`` scenarios; the figures of the JSON line."""
    t0 = time.perf_counter()
    lat: list[float] = []
    causes: dict[str, int] = {}
    bad: list[dict] = []
    for k in range(n):
        h = run_scenario(seed * 1_000_003 + k)
        lat.extend(h.kill_latencies_ms())
        for t in h.island.trips:
            c = t["cause"].split(" (")[0]
            causes[c] = causes.get(c, 0) + 1
        if h.violations:
            bad.append({"seed": seed * 1_000_003 + k, "violations": h.violations[:3]})
    arr = np.array(lat) if lat else np.zeros(1)
    return {
        "scenarios": n,
        "violations": len(bad),
        "violation_examples": bad[:5],
        "trips": int(len(lat)),
        "trip_causes": dict(sorted(causes.items())),
        "kill_latency_ms": {
            "min": float(arr.min()),
            "p50": float(np.percentile(arr, 50)),
            "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()),
        },
        "t_react_ms": SafetyConfig().t_react_s * 1e3,
        "run_time_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.safety --scenarios N --json``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.safety", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--scenarios", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    out = campaign(args.scenarios, args.seed)
    if not args.json:
        sys.stderr.write(
            f"{out['scenarios']} scenarios, {out['violations']} with violations, "
            f"{out['trips']} trips, worst kill latency {out['kill_latency_ms']['max']:.3f} ms\n"
        )
    print(json_line(out))
    return 0 if out["violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

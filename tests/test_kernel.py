"""The SimPy kernel and the MCU model."""

from __future__ import annotations

import time

import pytest
import simpy

from sim.kernel import LatenessRecordingEnvironment
from sim.mcu import McuCore


def test_preemption_delays_the_low_priority_task_by_the_high_priority_work():
    env = simpy.Environment()
    mcu = McuCore(env, clock_hz=1e6)  # 1 cycle = 1 µs
    out = {}

    def low():
        out["low"] = yield env.process(mcu.run("staging", 3, 10_000))  # 10 ms

    def high():
        yield env.timeout(0.002)
        out["high"] = yield env.process(mcu.run("acquisition", 0, 1_000))  # 1 ms

    env.process(low())
    env.process(high())
    env.run()
    assert out["high"] == pytest.approx(0.001)
    assert out["low"] == pytest.approx(0.011)
    assert mcu.tasks["staging"].preemptions == 1
    assert mcu.load(0.011) == pytest.approx(1.0)


def test_deadline_misses_are_counted_and_reported():
    env = simpy.Environment()
    mcu = McuCore(env, clock_hz=1e6)
    misses = []
    mcu.on_deadline_miss = lambda task, r, d, count: misses.append((task, r, d))
    env.process(mcu.run("dsp", 1, 5_000, deadline_s=0.004))
    env.run()
    assert mcu.tasks["dsp"].deadline_misses == 1
    assert misses == [("dsp", pytest.approx(0.005), 0.004)]


def test_bulk_accounting_adds_busy_time():
    env = simpy.Environment()
    mcu = McuCore(env, clock_hz=64e6)
    mcu.account("dsp", 1, runs=1000, cycles_each=6400)
    assert mcu.tasks["dsp"].busy_s == pytest.approx(0.1)
    assert mcu.summary(1.0)["cpu_load"] == pytest.approx(0.1)


def test_invalid_clock():
    with pytest.raises(ValueError, match="got -1"):
        McuCore(simpy.Environment(), clock_hz=-1)


def test_realtime_environment_records_lateness_instead_of_raising():
    env = LatenessRecordingEnvironment(factor=0.01)

    def slow():
        for _ in range(3):
            time.sleep(0.03)  # 3x longer than the 10 ms each step may take
            yield env.timeout(1)

    env.process(slow())
    env.run()
    assert env.now == 3
    assert env.late_events >= 1 and env.worst_lateness > 0.01

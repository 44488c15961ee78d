"""The application core: a preemptive fixed-priority CPU with a cycle cost model.

Each task instance asks for the core with its priority (lower number wins, as on a
Cortex-M NVIC) and holds it for ``cycles / clock_hz`` seconds; a higher-priority release
preempts it and it resumes later with what remains. Response time (release to completion),
busy time and deadline misses are recorded per task.

Most DMA blocks of a night do nothing but filter: their work is identical and
never contended, so their busy time is added in bulk with :meth:`McuCore.account`
instead of one SimPy event each. Blocks that matter (those in which a decision is made,
and every block released while a long task is in flight) run as SimPy processes so their
preemption and response times are simulated, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import simpy

#: Default MCU clock: a Cortex-M4F-class part at 64 MHz.
DEFAULT_CLOCK_HZ = 64e6


@dataclass
class TaskStats:
    """What was measured of one task.

    Attributes
    ----------
    priority : int
        Priority of the task (lower number wins).
    runs : int
        Instances completed, simulated or accounted in bulk.
    busy_s : float
        Time on the core, seconds.
    worst_response_s : float
        Longest time from release to completion, seconds.
    deadline_misses : int
        Instances that missed their deadline.
    preemptions : int
        Times an instance was preempted by a higher-priority one.
    """

    priority: int
    runs: int = 0
    busy_s: float = 0.0
    worst_response_s: float = 0.0
    deadline_misses: int = 0
    preemptions: int = 0


class McuCore:
    """One application core shared by prioritised tasks.

    Parameters
    ----------
    env : simpy.Environment
        The simulation's environment.
    clock_hz : float
        Core clock in Hz.

    Attributes
    ----------
    tasks : dict of str to TaskStats
        Figures per task name.
    in_flight : int
        Task instances released and not finished.

    Raises
    ------
    ValueError
        ``clock_hz`` is not positive.
    """

    def __init__(self, env: simpy.Environment, clock_hz: float = DEFAULT_CLOCK_HZ) -> None:
        if clock_hz <= 0:
            raise ValueError(f"Invalid MCU clock: expected > 0 Hz, got {clock_hz}.")
        self.env = env
        self.clock_hz = clock_hz
        self.core = simpy.PreemptiveResource(env, capacity=1)
        self.tasks: dict[str, TaskStats] = {}
        self.in_flight = 0  # task instances released and not finished
        #: Called as ``on_deadline_miss(task, response_s, deadline_s, count)`` when runs are
        #: late (``count`` > 1 for bulk-accounted runs, reported once).
        self.on_deadline_miss: Callable[[str, float, float, int], None] | None = None

    def _stats(self, task: str, priority: int) -> TaskStats:
        return self.tasks.setdefault(task, TaskStats(priority))

    def seconds(self, cycles: float) -> float:
        """Busy time of ``cycles`` on this core.

        Parameters
        ----------
        cycles : float
            CPU cycles.

        Returns
        -------
        float
            Seconds.
        """
        return cycles / self.clock_hz

    def account(
        self,
        task: str,
        priority: int,
        runs: int,
        cycles_each: float,
        deadline_s: float | None = None,
    ) -> None:
        """Add ``runs`` uncontended instances of a task without simulating them.

        If one instance alone takes longer than ``deadline_s``, every one of them misses it:
        they are counted, and reported once through ``on_deadline_miss``.

        Parameters
        ----------
        task : str
            Task name.
        priority : int
            Its priority (lower number wins).
        runs : int
            Instances to add (nothing happens for 0 or fewer).
        cycles_each : float
            CPU cycles per instance; its busy time is also its response time.
        deadline_s : float or None
            Deadline per instance, seconds; None: none.
        """
        if runs <= 0:
            return
        st = self._stats(task, priority)
        busy = self.seconds(cycles_each)
        st.runs += runs
        st.busy_s += runs * busy
        st.worst_response_s = max(st.worst_response_s, busy)
        if deadline_s is not None and busy > deadline_s:
            st.deadline_misses += runs
            if self.on_deadline_miss is not None:
                self.on_deadline_miss(task, busy, deadline_s, runs)

    def run(
        self,
        task: str,
        priority: int,
        cycles: float,
        deadline_s: float | None = None,
        deadline_from: float | None = None,
    ) -> Generator[simpy.Event, object, float]:
        """Run one instance of ``task`` (a SimPy process body); returns its response time.

        The response time runs from this call (the task's release). The deadline runs from
        ``deadline_from`` when given -- a dsp task must finish within its block period of
        the block's arrival, however late the acquisition released it -- else from the
        release too. A miss is reported as the time from that same origin.

        Parameters
        ----------
        task : str
            Task name.
        priority : int
            Its priority (lower number wins and preempts).
        cycles : float
            CPU cycles of this instance.
        deadline_s : float or None
            Deadline, seconds; None: none.
        deadline_from : float or None
            Simulation time the deadline counts from, seconds; None: the release.

        Yields
        ------
        simpy.Event
            Requests for the core and timeouts, for SimPy.

        Returns
        -------
        float
            Response time, seconds (the process's value).
        """
        st = self._stats(task, priority)
        self.in_flight += 1
        release = self.env.now
        remaining = self.seconds(cycles)
        try:
            while remaining > 1e-12:
                req = self.core.request(priority=priority, preempt=True)
                began: float | None = None
                try:
                    yield req
                    began = self.env.now
                    yield self.env.timeout(remaining)
                    remaining = 0.0
                except simpy.Interrupt:
                    # Preempted while running, or granted and preempted before it resumed.
                    st.preemptions += 1
                    if began is not None:
                        remaining -= self.env.now - began
                finally:
                    if began is not None:
                        st.busy_s += self.env.now - began
                    self.core.release(req)
        finally:
            self.in_flight -= 1
        response = self.env.now - release
        st.runs += 1
        st.worst_response_s = max(st.worst_response_s, response)
        if deadline_s is not None:
            since = response if deadline_from is None else self.env.now - deadline_from
            if since > deadline_s:
                st.deadline_misses += 1
                if self.on_deadline_miss is not None:
                    self.on_deadline_miss(task, since, deadline_s, 1)
        return response

    def load(self, elapsed_s: float) -> float:
        """Fraction of ``elapsed_s`` the core was busy.

        Parameters
        ----------
        elapsed_s : float
            Time elapsed, seconds.

        Returns
        -------
        float
            Busy time over ``elapsed_s``; 0 when ``elapsed_s`` is not positive.
        """
        if elapsed_s <= 0:
            return 0.0
        return sum(t.busy_s for t in self.tasks.values()) / elapsed_s

    def summary(self, elapsed_s: float) -> dict:
        """Per-task figures and the overall load, for summary.json.

        Parameters
        ----------
        elapsed_s : float
            Time elapsed, seconds.

        Returns
        -------
        dict
            ``clock_hz``, ``cpu_load`` (:meth:`load`) and ``tasks``: per task, in order of
            priority, ``priority``, ``runs``, ``load`` (fraction), ``worst_response_ms``,
            ``deadline_misses`` and ``preemptions``.
        """
        return {
            "clock_hz": self.clock_hz,
            "cpu_load": self.load(elapsed_s),
            "tasks": {
                name: {
                    "priority": t.priority,
                    "runs": t.runs,
                    "load": t.busy_s / elapsed_s if elapsed_s > 0 else 0.0,
                    "worst_response_ms": t.worst_response_s * 1e3,
                    "deadline_misses": t.deadline_misses,
                    "preemptions": t.preemptions,
                }
                for name, t in sorted(self.tasks.items(), key=lambda kv: kv[1].priority)
            },
        }

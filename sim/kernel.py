"""Time: SimPy's virtual environment, and a real-time one that records lateness.

Virtual time is the default: a night runs as fast as the machine allows. For a board in the
loop, :class:`LatenessRecordingEnvironment` paces events to the wall clock like SimPy's
``RealtimeEnvironment`` but, where SimPy's strict mode raises, it records how late each
event was processed so a run can report its real-time margin. Only ``step`` is overridden:
real-time pacing never leaks into firmware code.
"""

from __future__ import annotations

from time import monotonic, sleep

import simpy
from simpy.core import EmptySchedule, Environment, Infinity

#: The default environment: virtual time in seconds.
VirtualEnvironment = simpy.Environment


class LatenessRecordingEnvironment(simpy.rt.RealtimeEnvironment):
    """Real-time environment that records lateness instead of raising.

    Parameters
    ----------
    initial_time : float
        Simulation time at start, seconds.
    factor : float
        Real seconds per simulated second.

    Attributes
    ----------
    worst_lateness : float
        Largest lateness of an event so far, seconds of wall clock.
    late_events : int
        Events processed more than 1 ms late.
    processed_events : int
        Events processed.
    """

    def __init__(self, initial_time: float = 0, factor: float = 1.0) -> None:
        super().__init__(initial_time=initial_time, factor=factor, strict=False)
        self.worst_lateness = 0.0
        self.late_events = 0
        self.processed_events = 0

    def step(self) -> None:
        """Process the next event when its real time has come; remember if it was late.

        Raises
        ------
        simpy.core.EmptySchedule
            No event is scheduled.
        """
        evt_time = self.peek()
        if evt_time is Infinity:
            raise EmptySchedule
        real_time = self.real_start + (evt_time - self.env_start) * self.factor
        lateness = monotonic() - real_time
        if lateness > 0:
            self.late_events += lateness > 0.001
            self.worst_lateness = max(self.worst_lateness, lateness)
        else:
            while (delta := real_time - monotonic()) > 0:
                sleep(delta)
        self.processed_events += 1
        Environment.step(self)

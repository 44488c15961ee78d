"""The interlock: the one path from the firmware to the transducers.

Every stimulus passes through :meth:`Interlock.request`. The interlock refuses (never
clips) a request beyond a limit, logs every refusal, and once tripped stays open (latched)
until re-armed from outside the firmware with the board's re-arm token. The transducers are
owned by the interlock; the application never holds a reference to them.

This is the first version; the safety-island issue puts it under the island's sole control.
"""

from __future__ import annotations

import collections
import hmac
import logging
from dataclasses import dataclass, fields

from hal.base import Stimulus, Transducer, UserInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Stimulation limits; each is checked over its own window.

    Parameters
    ----------
    max_level_db : float
        Loudest audio pulse, dB SPL.
    max_pulse_s : float
        Longest pulse, seconds.
    max_per_minute : int
        Stimuli delivered in any 60-s window.
    max_per_night : int
        Stimuli delivered in the night.
    max_light_pct : float
        Brightest light, percent of full intensity.
    max_haptic_pct : float
        Strongest haptic pulse, percent of full drive.
    """

    max_level_db: float = 55.0
    max_pulse_s: float = 0.2
    max_per_minute: int = 30
    max_per_night: int = 3000
    max_light_pct: float = 30.0
    max_haptic_pct: float = 60.0


#: Ceilings no configuration can pass.
HARD_CEILINGS = Limits(
    max_level_db=60.0,
    max_pulse_s=1.0,
    max_per_minute=40,
    max_per_night=6000,
    max_light_pct=100.0,
    max_haptic_pct=100.0,
)


def check_limits(limits: Limits) -> Limits:
    """Refuse limits above the hard ceilings or not positive, naming the field."""
    for f in fields(Limits):
        value, ceiling = getattr(limits, f.name), getattr(HARD_CEILINGS, f.name)
        if not 0 < value <= ceiling:
            raise UserInputError(
                f"Invalid safety limit '{f.name}': expected a value in (0, {ceiling}], got {value}."
            )
    return limits


@dataclass(frozen=True)
class Verdict:
    """The interlock's answer to a request."""

    delivered: bool
    reason: str


class Interlock:
    """Latched interlock in front of the transducers.

    Parameters
    ----------
    transducers : dict of str to Transducer
        By modality.
    limits : Limits
        Checked on every request.
    rearm_token : str
        Secret of the board; only a re-arm carrying it closes a tripped interlock.
    sfreq : float
        Device rate, to turn onset samples into seconds for the windows.
    """

    def __init__(
        self,
        transducers: dict[str, Transducer],
        limits: Limits,
        rearm_token: str,
        sfreq: float,
    ) -> None:
        self._transducers = dict(transducers)
        self.limits = check_limits(limits)
        self._token = rearm_token
        self._sfreq = sfreq
        self._recent: collections.deque[float] = collections.deque()
        self.delivered_count = 0
        self.tripped = False
        self.trip_cause: str | None = None
        self.log: list[dict] = []

    def latency(self, modality: str) -> float:
        """Output latency of a transducer, seconds (for the firmware's compensation)."""
        return self._transducers[modality].latency_s

    def request(self, stim: Stimulus, t: float) -> Verdict:
        """Ask for ``stim`` to be emitted now (``t`` seconds, the timer's fire time)."""
        if self.tripped:
            return Verdict(False, f"interlock open: {self.trip_cause}")
        lim = self.limits
        breach = None
        onset_s = stim.onset_sample / self._sfreq
        while self._recent and self._recent[0] <= onset_s - 60.0:
            self._recent.popleft()
        if stim.modality not in self._transducers:
            breach = f"no {stim.modality} transducer"
        elif stim.modality == "audio" and stim.level > lim.max_level_db:
            breach = f"max_level_db {stim.level} > {lim.max_level_db}"
        elif stim.modality == "light" and stim.level > lim.max_light_pct:
            breach = f"max_light_pct {stim.level} > {lim.max_light_pct}"
        elif stim.modality == "haptic" and stim.level > lim.max_haptic_pct:
            breach = f"max_haptic_pct {stim.level} > {lim.max_haptic_pct}"
        elif stim.duration > lim.max_pulse_s:
            breach = f"max_pulse_s {stim.duration} > {lim.max_pulse_s}"
        elif len(self._recent) >= lim.max_per_minute:
            breach = f"max_per_minute {lim.max_per_minute} reached"
        elif self.delivered_count >= lim.max_per_night:
            breach = f"max_per_night {lim.max_per_night} reached"
        if breach is not None:
            self.log.append({"kind": "safety", "event": "limit", "t": t, "limit": breach})
            logger.debug("refused stimulus at %.3f s: %s", t, breach)
            return Verdict(False, f"limit: {breach}")
        self._recent.append(onset_s)
        self.delivered_count += 1
        self._transducers[stim.modality].emit(stim)
        return Verdict(True, "ok")

    def trip(self, cause: str, t: float, since: float | None = None) -> None:
        """Open the interlock: every output off, latched until :meth:`rearm`."""
        if self.tripped:
            return
        for transducer in self._transducers.values():
            transducer.off()
        self.tripped = True
        self.trip_cause = cause
        self.log.append(
            {
                "kind": "safety",
                "event": "trip",
                "t": t,
                "cause": cause,
                "condition_since": t if since is None else since,
            }
        )
        logger.info("interlock tripped at %.3f s: %s", t, cause)

    def rearm(self, token: str, t: float) -> bool:
        """Close the interlock from outside the firmware; a wrong token is refused and logged."""
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            self.log.append({"kind": "safety", "event": "rearm_refused", "t": t})
            return False
        if self.tripped:
            self.tripped = False
            self.trip_cause = None
            self.log.append({"kind": "safety", "event": "rearm", "t": t})
        return True

"""A simple causal 30-s sleep stager (a first version; the staging issue replaces it).

Each epoch is decided when its last sample has arrived, from that epoch and the epochs
before it only. Features follow the AASM definitions a scorer uses:

* N3 when at least 20% of the epoch is slow-wave activity (0.5-2 Hz, > 75 µV peak to peak,
  approximated as |0.5-2 Hz band| > 37.5 µV);
* W when alpha dominates the EEG or the chin EMG is high relative to this night so far;
* R when the EMG is at the night's floor, the EEG is low-voltage mixed frequency and the
  EOG shows eye movements;
* N2 when sigma (spindle) power is present, N1 otherwise.

Relative thresholds use a running normalisation over the epochs seen so far (no future).
An epoch whose signal was mostly bad keeps the previous stage and is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPOCH_S = 30.0

#: Cycles per epoch: a 8192-point real FFT per channel (~40 cycles/point on a Cortex-M4F
#: with CMSIS-DSP) plus band sums and rules.
CYCLES_FFT_POINT = 40
CYCLES_RULES = 20_000


@dataclass(frozen=True)
class EpochDecision:
    """The stage of one epoch and what it rested on."""

    epoch: int
    stage: str
    bad_signal: bool
    features: dict[str, float]


def _band_power(freqs: np.ndarray, psd: np.ndarray, lo: float, hi: float) -> float:
    sel = (freqs >= lo) & (freqs < hi)
    return float(psd[sel].sum())


class SimpleStager:
    """Rule-based causal stager over 30-s epochs.

    Parameters
    ----------
    sfreq : float
        Sampling rate in Hz.
    has_emg, has_eog : bool
        Whether the board has those channels (EEG alone works).
    """

    def __init__(self, sfreq: float, has_emg: bool, has_eog: bool) -> None:
        self.sfreq = sfreq
        self.n_epoch = round(EPOCH_S * sfreq)
        self.has_emg = has_emg
        self.has_eog = has_eog
        self.history: list[dict[str, float]] = []
        self.stage = "W"

    def cycles_per_epoch(self, n_channels: int) -> int:
        """Declared MCU cost of one decision."""
        n_fft = 1 << (self.n_epoch - 1).bit_length()
        return n_channels * n_fft * CYCLES_FFT_POINT + CYCLES_RULES

    def features(
        self, eeg: np.ndarray, so_band: np.ndarray, eog: np.ndarray | None, emg: np.ndarray | None
    ) -> dict[str, float]:
        """Features of one epoch (µV inputs, one row each)."""
        x = eeg - eeg.mean()
        spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / self.sfreq)
        total = _band_power(freqs, spec, 0.5, 30) + 1e-12
        f = {
            "delta": _band_power(freqs, spec, 0.5, 4) / total,
            "theta": _band_power(freqs, spec, 4, 8) / total,
            "alpha": _band_power(freqs, spec, 8, 12) / total,
            "sigma": _band_power(freqs, spec, 12, 15) / total,
            "beta": _band_power(freqs, spec, 15, 30) / total,
            "swa_frac": float(np.mean(np.abs(so_band) > 37.5)),
            "log_total": float(np.log10(total)),
        }
        if emg is not None:
            f["emg"] = float(np.log10(np.var(emg) + 1e-12))
        if eog is not None:
            e = eog - eog.mean()
            f["eog"] = float(np.log10(np.var(e) + 1e-12))
        return f

    def decide(self, epoch: int, feats: dict[str, float], bad: bool) -> EpochDecision:
        """Stage an epoch from its features and the night so far."""
        if bad:
            return EpochDecision(epoch, self.stage, True, feats)
        self.history.append(feats)

        def rel(name: str) -> float:
            # Position of this epoch's value among the night so far (0 = lowest, 1 = highest).
            vals = np.array([h[name] for h in self.history if name in h])
            if vals.size < 10:
                return 0.5
            return float(np.mean(vals < feats[name]))

        if feats["swa_frac"] >= 0.2:
            stage = "N3"
        elif feats["alpha"] > 0.25 or feats["beta"] > 0.35 or (self.has_emg and rel("emg") > 0.9):
            stage = "W"
        elif (
            (not self.has_emg or rel("emg") < 0.25)
            and feats["delta"] < 0.6
            and feats["sigma"] < 0.06
            and (not self.has_eog or rel("eog") > 0.5)
        ):
            stage = "R"
        elif feats["sigma"] > 0.03 or feats["delta"] > 0.5:
            stage = "N2"
        else:
            stage = "N1"
        self.stage = stage
        return EpochDecision(epoch, stage, False, feats)

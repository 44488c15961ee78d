"""Report panels of phase-locked stimulation: where the sounds landed and what they evoked.

* a polar histogram of the offline slow-oscillation phase at each delivered onset (0° = the
  positive peak, the target) — and at the would-be onsets of a sham program;
* the stimulus-locked average EEG (the evoked slow wave) and spindle-band envelope (the
  evoked spindle), -1 to 3 s around the onsets;
* stimuli per stage (the sleeper's stage on virtual nights, the online stager's otherwise).
"""

from __future__ import annotations

import numpy as np

from sim import analysis

_STAGES = ("W", "N1", "N2", "N3", "R")


def _onsets(result, which: str) -> np.ndarray:
    stims = [e for e in result.events if e["kind"] == "stim"]
    if which == "delivered":
        chosen = [e for e in stims if e["delivered"]]
    else:
        chosen = [e for e in stims if e.get("reason") == "sham"]
    return np.array([round(e["t"] * result.sfreq) for e in chosen], dtype=int)


def draw_phase_panels(fig, spec, result) -> None:
    """Draw the three panels into ``spec`` (a GridSpec cell of ``fig``).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The report figure.
    spec : matplotlib.gridspec.SubplotSpec
        The cell to fill (split into three panels side by side).
    result : sim.runner.RunResult
        The night.
    """
    cells = spec.subgridspec(1, 3, wspace=0.35)
    ax_polar = fig.add_subplot(cells[0], projection="polar")
    ax_evoked = fig.add_subplot(cells[1])
    ax_stage = fig.add_subplot(cells[2])

    which = "delivered" if _onsets(result, "delivered").size else "sham"
    onsets = _onsets(result, which)
    # The phase and the spindle envelope are cached on the result: write_outputs computes
    # them on a worker thread while it writes the other outputs.
    x = analysis.recorded_eeg(result)
    if x is not None:
        onsets = onsets[(onsets >= 0) & (onsets < x.size)]

    # Polar histogram of the ground-truth phase at the onsets.
    if x is not None and onsets.size:
        phases = analysis.recorded_phase(result)[onsets]
        m = analysis.phase_metrics(phases)
        bins = np.linspace(-np.pi, np.pi, 25)
        counts, _ = np.histogram(np.radians(phases), bins)
        ax_polar.bar(bins[:-1], counts, width=np.diff(bins), align="edge", color="C2", alpha=0.8)
        ax_polar.set_title(
            f"{which} phase: mean {m['mean_error_deg']:+.0f}°, R {m['resultant_length']:.2f},"
            f"\n{100 * m['within_90']:.0f}% within ±90° (n={m['n']})",
            fontsize=8,
        )
    else:
        ax_polar.set_title("no stimuli", fontsize=8)
    ax_polar.set_theta_zero_location("N")
    ax_polar.set_yticklabels([])

    # Stimulus-locked averages: the evoked slow wave and the evoked spindle.
    if x is not None and onsets.size:
        t, mean = analysis.evoked(x, result.sfreq, onsets)
        ax_evoked.plot(t, mean, color="C0", lw=1, label="EEG (µV)")
        env = analysis.recorded_sigma_envelope(result)
        t, env_mean = analysis.evoked(env, result.sfreq, onsets)
        twin = ax_evoked.twinx()
        twin.plot(t, env_mean, color="C3", lw=1)
        twin.set_ylabel("11-16 Hz envelope (µV)", color="C3", fontsize=8)
        twin.tick_params(labelsize=7)
    ax_evoked.axvline(0, color="k", lw=0.8, ls="--")
    ax_evoked.set_xlabel("s from onset", fontsize=8)
    ax_evoked.set_ylabel("EEG (µV)", color="C0", fontsize=8)
    ax_evoked.set_title(f"stimulus-locked average ({which})", fontsize=8)
    ax_evoked.tick_params(labelsize=7)

    # Stimuli per stage.
    per_stage = result.summary.get("analysis", {}).get("delivered_per_stage")
    if per_stage is None:
        per_stage = dict.fromkeys(_STAGES, 0)
        ref = result.true_hypnogram or [s for _, s in sorted(result.hypnogram)]
        for o in _onsets(result, "delivered"):
            k = int(o / result.sfreq // 30)
            if 0 <= k < len(ref):
                per_stage[ref[k]] += 1
    ax_stage.bar(list(per_stage), list(per_stage.values()), color="C1")
    ax_stage.set_title("delivered per stage", fontsize=8)
    ax_stage.tick_params(labelsize=7)

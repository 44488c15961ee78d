"""``report.png``: the night at a glance (hypnogram, stimuli and safety, phase, CPU load)."""

from __future__ import annotations

from pathlib import Path

# A bare Figure, not pyplot: reports are files, never windows, so no backend or global
# figure registry is needed (and the process-wide backend is left alone).
from matplotlib.figure import Figure

from sim.report_phase import draw_phase_panels
from sim.runner import RunResult

# Hypnograms are drawn with W on top and N3 at the bottom, REM between W and N1.
_ORDER = {"W": 4, "R": 3, "N1": 2, "N2": 1, "N3": 0}


def _plain_title(ax, text: str, **kwargs: object) -> None:
    """A title shown as written: program names and paths may hold ``$``, which matplotlib
    would otherwise parse as mathematics (and fail on)."""
    ax.set_title(text, parse_math=False, **kwargs)


def draw_report(result: RunResult, path: str | Path) -> None:
    """Draw the report of a night into ``path`` (PNG).

    Parameters
    ----------
    result : RunResult
        The night.
    path : str or Path
        Where to write the PNG.
    """
    fig = Figure(figsize=(12, 11))
    # Fixed margins instead of a layout engine: the constrained layout measured every
    # text twice and took a third of the drawing time, for panels that never change. The
    # empty rows leave room for the titles and axis labels between the panels.
    grid = fig.add_gridspec(
        7, 1, height_ratios=[3, 0.5, 1.2, 1.3, 2.5, 0.9, 1.6], hspace=0.0,
        left=0.08, right=0.985, top=0.975, bottom=0.05,
    )  # fmt: skip
    axes = [fig.add_subplot(grid[0]), fig.add_subplot(grid[2]), fig.add_subplot(grid[6])]
    hours = 1 / 3600
    ax = axes[0]
    # Hypnograms as step lines: the same drawing as ``stairs``, whose patch costs a Python
    # loop over every step to find the data limits.
    if result.true_hypnogram:
        t = [k * 30 * hours for k in range(len(result.true_hypnogram) + 1)]
        y = [_ORDER[s] for s in result.true_hypnogram]
        ax.plot(t, y + y[-1:], drawstyle="steps-post", color="0.7", lw=3, label="sleeper (truth)")
    if result.hypnogram:
        starts = [s for s, _ in result.hypnogram]
        t = [s * hours for s in starts] + [(starts[-1] + 30) * hours]
        y = [_ORDER[s] for _, s in result.hypnogram]
        ax.plot(t, y + y[-1:], drawstyle="steps-post", color="C0", lw=1.2, label="online stager")
    ax.set_yticks(sorted(_ORDER.values()), sorted(_ORDER, key=_ORDER.get))
    ax.set_ylabel("stage")
    _plain_title(
        ax,
        f"{result.program.name} on {result.source_description} — "
        f"{result.summary['stimuli']['delivered']} stimuli delivered",
    )
    if result.true_hypnogram or result.hypnogram:  # no epoch was staged: nothing to name
        ax.legend(loc="upper right", fontsize=8)

    ax = axes[1]
    stims = [e for e in result.events if e["kind"] == "stim"]
    delivered = [e["t"] * hours for e in stims if e["delivered"]]
    withheld = [e["t"] * hours for e in stims if not e["delivered"]]
    ax.eventplot([delivered, withheld], lineoffsets=[1, 0], colors=["C2", "C3"], linelengths=0.8)
    ax.set_yticks([0, 1], ["withheld", "delivered"])
    bad = [e for e in result.events if e.get("event") == "bad_signal"]
    for e in bad:
        ax.axvspan(e["t"] * hours, (e["t"] + e["duration"]) * hours, color="0.85", lw=0)
    # The safety timeline: trips (dashed), re-arms (green), refused re-arms (red ticks),
    # limit refusals (orange ticks) and the release cue (yellow).
    safety = [e for e in result.events if e["kind"] == "safety"]
    for e in safety:
        t = e["t"] * hours
        if e["event"] == "trip":
            ax.axvline(t, color="k", ls="--", lw=1)
            ax.text(t, 1.45, " " + e["cause"], fontsize=7, va="top", rotation=0, clip_on=True)
        elif e["event"] == "rearm":
            ax.axvline(t, color="C2", ls=":", lw=1.2)
        elif e["event"] == "rearm_refused":
            ax.plot([t], [-0.45], marker="|", color="C3", ms=8)
        elif e["event"] == "limit":
            ax.plot([t], [-0.45], marker="|", color="C1", ms=6)
        elif e["event"] == "release_cue":
            ax.plot([t], [0.5], marker=".", color="gold", ms=6)
    ax.set_xlim(axes[0].get_xlim())
    ax.set_xlabel("hours")
    _plain_title(
        ax,
        "stimuli and safety (grey: bad signal, dashed: trip, dotted: re-arm, "
        "yellow: release cue, ticks: refusals)",
        fontsize=9,
    )

    ax = axes[2]
    tasks = result.summary["cpu"]["tasks"]
    names = list(tasks)
    loads = [100 * tasks[n]["load"] for n in names]
    worst = [tasks[n]["worst_response_ms"] for n in names]
    bars = ax.barh(names, loads, color="C1")
    for bar, w in zip(bars, worst, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f"  worst response {w:.2f} ms",
            va="center",
            fontsize=8,
        )
    ax.set_xlabel("CPU load (%)")
    _plain_title(
        ax,
        f"MCU {result.summary['cpu']['clock_hz'] / 1e6:.0f} MHz: "
        f"load {100 * result.summary['cpu']['cpu_load']:.1f}%, "
        f"{result.summary['deadline_misses']} deadline misses",
        fontsize=9,
    )
    ax.set_xlim(0, max(loads + [1]) * 1.6)

    # Where the sounds landed (phase), what they evoked, and in which stages. Drawn last:
    # they need the offline phase and spindle envelope, which write_outputs computes on a
    # worker thread meanwhile.
    draw_phase_panels(fig, grid[4], result)
    fig.savefig(path, dpi=80, format="png")

"""The ``slumbersync`` command.

User errors (a missing file, a wrong channel, a bad program field) are printed on one line
and exit with status 2, without a traceback. Everything else is a bug and shows one.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from firmware.program import builtin_programs
from hal.base import UserInputError
from sim.scenarios import SCENARIOS

logger = logging.getLogger("slumbersync")

EXAMPLES = """\
examples:
  slumbersync simulate --hours 8 --out runs/demo
  slumbersync simulate --recording night.edf --channel C3-A1 --program clas --out runs/night1
  slumbersync simulate --recording 'sleeper://?seed=3&hours=2' --program sham --out runs/sham
  slumbersync simulate --recording 'file:///data/psg.edf?eog=LOC&emg=Chin1&ecg=none' \\
      --channel C3-M2 --out runs/psg

Options of a recording ride on its file:// URL (quote it: '&' and '?' are shell syntax):
  channel=, eog=, emg=, ecg= (a channel name, or none), sfreq=, min_sfreq=,
  units= (V, mV, uV or nV: the stored numbers' unit, when the file's header is wrong).
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, as every other user error."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` on one line with where to find help, and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render the help)."""
    parser = _Parser(
        prog="slumbersync",
        description="Simulate the SlumberSync headband firmware on a virtual sleeper or on "
        "recorded EEG, in virtual time, with the timing of the real microcontroller.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sim = sub.add_parser(
        "simulate",
        help="run one night and write its outputs",
        description="Run the firmware through one night and write events.jsonl, "
        "hypnogram.csv, summary.json, session.fif and report.png into --out.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.add_argument(
        "--recording",
        metavar="SPEC",
        help="a recording MNE reads (EDF, BDF, FIF, BrainVision...), as a path or file:// URL, "
        "or a source spec such as sleep-physionet://0/1 or 'sleeper://?seed=2&hours=6' "
        "(default: the virtual sleeper); a recording's own options (channel=, eog=, emg=, "
        "ecg=, sfreq=, min_sfreq=, units=) go on its file:// URL",
    )
    sim.add_argument(
        "--channel",
        metavar="NAME",
        help="EEG channel of the recording (default: the first EEG channel; the choice is logged)",
    )
    sim.add_argument(
        "--hours",
        type=_positive_float,
        default=8.0,
        help="length of the virtual night in hours (default: 8; ignored for recordings)",
    )
    sim.add_argument(
        "--seed",
        type=int,
        default=1,
        help="seed of everything random in the run (default: 1); a run is reproducible "
        "from its seed",
    )
    sim.add_argument(
        "--program",
        default="clas",
        metavar="NAME|FILE",
        help=f"modulation program: a built-in name ({', '.join(builtin_programs())}) or a "
        "TOML file (default: clas)",
    )
    sim.add_argument("--out", required=True, metavar="DIR", help="output folder")
    sim.add_argument(
        "--sfreq",
        type=_positive_float,
        default=None,
        help="device sampling rate in Hz, a whole number >= 50; recordings are resampled to "
        "it (default: the source's ?sfreq= if it has one, else 250)",
    )
    sim.add_argument(
        "--min-sfreq",
        type=_positive_float,
        default=None,
        help="lowest recording rate accepted in Hz (default: the source's ?min_sfreq= if "
        "it has one, else 100)",
    )
    sim.add_argument(
        "--scenario",
        choices=SCENARIOS,
        help="run a safety scenario: the story (nightmare-glitch) or a fault (app-hang, "
        "flood, electrode-off, wake-button); see sim/scenarios.py",
    )
    sim.add_argument("--no-report", action="store_true", help="do not draw report.png")
    sim.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on standard error (default: auto, when it is a terminal)",
    )
    return parser


class ProgressBar:
    """A one-line progress bar on standard error."""

    def __init__(self, label: str, width: int = 40) -> None:
        self.label = label
        self.width = width
        self.t0 = time.perf_counter()

    def __call__(self, fraction: float) -> None:
        """Redraw at ``fraction`` (0-1)."""
        done = int(self.width * fraction)
        elapsed = time.perf_counter() - self.t0
        sys.stderr.write(
            f"\r{self.label} [{'#' * done}{'.' * (self.width - done)}] "
            f"{100 * fraction:5.1f}% {elapsed:5.1f} s"
        )
        if fraction >= 1:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _summary_screen(summary: dict, out: str, output_s: float) -> str:
    st = summary["stimuli"]
    cpu = summary["cpu"]
    stages = summary["stages"]
    total = max(1, summary["epochs"])
    lines = [
        f"night      {summary['duration_s'] / 3600:.2f} h of {summary['source']}",
        f"program    {summary['program']} (seed {summary['seed']})",
        "stages     " + "  ".join(f"{s} {100 * n / total:.0f}%" for s, n in stages.items()),
        f"stimuli    {st['delivered']} delivered, {st['refused']} refused by the interlock, "
        f"{st['withheld']} withheld at the last look, {st['sham']} sham, {st['late']} late"
        + (f", {st['cut']} cut in flight by a trip" if st.get("cut") else "")
        + (f", {st['after_end']} after the night's end" if st.get("after_end") else ""),
        f"signal     {summary['bad_signal_s']:.0f} s bad (stimulation withheld)",
        f"mcu        load {100 * cpu['cpu_load']:.2f}% at {cpu['clock_hz'] / 1e6:.0f} MHz, "
        + ", ".join(
            f"{name} worst {t['worst_response_ms']:.2f} ms" for name, t in cpu["tasks"].items()
        ),
        f"deadlines  {summary['deadline_misses']} missed",
        f"safety     {summary['safety']['trips']} trip(s)"
        + (
            f", first: {summary['safety']['first_trip']['cause']} at "
            f"{summary['safety']['first_trip']['t']:.3f} s"
            if summary["safety"]["first_trip"]
            else ""
        ),
        f"speed      {summary['run_time_s']:.2f} s wall, "
        f"{summary['speed_x_realtime']:,.0f}x real time",
        f"outputs    {out} (written in {output_s:.2f} s)",
    ]
    return "\n".join(lines)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run ``slumbersync simulate``."""
    from sim.outputs import prepare_output_folder, remove_created_folders, write_outputs
    from sim.runner import RunConfig, run_night

    source = args.recording or f"sleeper://?hours={args.hours:.12g}"
    if args.recording is None:
        logger.info("no --recording: simulating %g h on the virtual sleeper", args.hours)
    config = RunConfig(
        source=source,
        program=args.program,
        seed=args.seed,
        channel=args.channel,
        sfreq=args.sfreq,
        min_sfreq=args.min_sfreq,
        scenario=args.scenario,
    )
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = ProgressBar("simulating") if show else None
    # An --out that cannot hold the outputs is an error now, not after the night.
    created = prepare_output_folder(args.out)
    try:
        result = run_night(config, progress=progress)
    except BaseException:
        remove_created_folders(created)
        raise
    t0 = time.perf_counter()
    out = write_outputs(result, args.out, report=not args.no_report)
    # summary.json is already written: the time the outputs took is only shown.
    print(_summary_screen(result.summary, str(out), time.perf_counter() - t0))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slumbersync`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # MNE is chatty at INFO; its warnings still show.
        logging.getLogger("mne").setLevel(logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "simulate":
            return cmd_simulate(args)
    except UserInputError as err:
        print(f"slumbersync: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slumbersync: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

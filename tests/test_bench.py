"""The benchmarks' command lines: how they load recordings, their JSON line, their help."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
from pathlib import Path

import mne
import numpy as np
import pytest

import bench
from bench import phase
from bench._json import json_line, strict
from hal.recording import RecordingSource

DREAMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreams"
BENCHES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def strict_loads(line: str) -> object:
    """``json.loads`` that refuses NaN and Infinity, as every other JSON parser does."""

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def uppercase_uv_edf(path: Path, seconds: float = 60.0) -> tuple[Path, np.ndarray]:
    """An EDF whose header says ``UV`` (as the DREAMS recorder writes), and its volts.

    MNE matches the unit with its case, so alone it reads these microvolts as volts.
    """
    pytest.importorskip("edfio")
    sfreq = 100.0
    t = np.arange(round(seconds * sfreq)) / sfreq
    rng = np.random.default_rng(0)
    volts = np.vstack(
        [
            40e-6 * np.sin(2 * np.pi * 1.0 * t) + 2e-6 * rng.standard_normal(t.size),
            20e-6 * np.sin(2 * np.pi * 7.0 * t),
        ]
    )
    raw = mne.io.RawArray(volts, mne.create_info(["C3-A1", "EOG1"], sfreq, "eeg"), verbose=False)
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose=False)
    blob = bytearray(path.read_bytes())
    n_signals = int(blob[252:256])
    start = 256 + 96 * n_signals
    units = [bytes(blob[start + 8 * i : start + 8 * i + 8]).strip() for i in range(n_signals)]
    assert units.count(b"uV") == 2  # (MNE adds an "EDF Annotations" signal, without unit)
    for i, unit in enumerate(units):
        if unit == b"uV":
            blob[start + 8 * i : start + 8 * i + 2] = b"UV"
    path.write_bytes(bytes(blob))
    return path, volts


def test_phase_reads_an_uppercase_uv_edf_in_microvolts(tmp_path: Path) -> None:
    path, volts = uppercase_uv_edf(tmp_path / "upper.edf")
    rec = phase.load_recording(path, "C3-A1", None, None)
    # 60 s at the device rate, tens of microvolts (not 10^6 times more).
    assert rec.x_uv.size == 60 * 250
    assert 35.0 < np.percentile(np.abs(rec.x_uv), 99) < 50.0
    # The simulator's own loader, sample for sample.
    with RecordingSource.from_path(path, channel="C3-A1", min_sfreq=0, eog=False) as src:
        np.testing.assert_array_equal(rec.x_uv, src.read(0, src.info.n_samples)[0] * 1e6)
    # The no-hypnogram default still covers the whole recording (two 30-s epochs).
    assert list(rec.stages) == ["N2", "N2"] and rec.stage_len_s == 30.0


def test_phase_names_the_channels_when_the_channel_is_wrong(tmp_path: Path) -> None:
    path, _ = uppercase_uv_edf(tmp_path / "upper.edf")
    with pytest.raises(SystemExit, match=r"'C3' not found.*'C3-A1'"):
        phase.load_recording(path, "C3", None, None)


@pytest.mark.skipif(not DREAMS.is_dir(), reason="DREAMS excerpts not available")
def test_phase_on_dreams_excerpt3_edf_delivers(capsys: pytest.CaptureFixture[str]) -> None:
    """excerpt3.edf writes "UV" in its header: read as volts, no wave ever crossed a gate."""
    argv = [
        "--recording",
        str(DREAMS / "excerpt3.edf"),
        "--channel",
        "C3-A1",
        "--hypnogram",
        str(DREAMS / "Hypnogram_excerpt3.txt"),
        "--estimators",
        "echt",
    ]
    assert phase.main(argv) == 0
    result = strict_loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = result["estimators"]["echt"]["excerpt3"]
    # The README gives 50 for excerpt 3 (its text file): the EDF holds the same EEG.
    assert 40 <= metrics["n"] <= 60
    assert abs(metrics["mean_deg"]) < 30


def test_phase_json_line_is_strict_without_a_stimulus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = uppercase_uv_edf(tmp_path / "awake.edf")
    hypnogram = tmp_path / "hypnogram.csv"
    hypnogram.write_text("epoch_start_s,stage\n0,W\n30,W\n")
    argv = ["--recording", str(path), "--channel", "C3-A1", "--hypnogram", str(hypnogram)]
    assert phase.main([*argv, "--gate", "expert", "--estimators", "echt,ngo"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = strict_loads(line)
    for name in ("echt", "ngo"):
        for row in ("awake", "pooled"):
            m = result["estimators"][name][row]
            # No stimulus, no minute of N2/N3: the metrics without a value are null.
            assert m["n"] == 0 and m["mean_deg"] is None and m["per_min_n2n3"] is None


def test_json_line_writes_null_for_non_finite_numbers() -> None:
    obj = {
        "nan": float("nan"),
        "inf": [math.inf, -math.inf, np.float32("nan")],
        "numpy": (np.int64(3), np.float64(2.5), np.bool_(True)),
        "array": np.array([1.0, np.nan]),
        "text": "NaN",
        "none": None,
    }
    want = {
        "nan": None,
        "inf": [None, None, None],
        "numpy": [3, 2.5, True],
        "array": [1.0, None],
        "text": "NaN",
        "none": None,
    }
    assert strict(obj) == want
    assert strict_loads(json_line(obj)) == want
    assert json_line({"a": 1}, separators=(",", ":")) == '{"a":1}'


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_writes_its_json_line_through_the_strict_helper(name: str) -> None:
    source = (Path(bench.__path__[0]) / f"{name}.py").read_text(encoding="utf-8")
    assert "json.dumps" not in source and "json.dump(" not in source


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_help_names_the_module_to_run(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m bench.{name} ")

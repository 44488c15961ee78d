"""bench.speed's floor under the end-to-end time measures what it says it measures."""

from __future__ import annotations

import math
from pathlib import Path

import mne
import numpy as np

from bench.speed import time_fif_save, time_startup


def test_fif_save_floor_writes_the_same_samples_and_annotations(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    info = mne.create_info(["C3", "EOG", "EMG"], 250.0, ["eeg", "eog", "emg"])
    raw = mne.io.RawArray(rng.standard_normal((3, 250 * 90)) * 20e-6, info, verbose="error")
    raw.set_annotations(mne.Annotations([1.0, 31.5], [0.05, 30.0], ["stim/clas", "N2"]))
    path = tmp_path / "session.fif"
    raw.save(path, fmt="single", verbose="error")

    seconds = time_fif_save(path)

    assert math.isfinite(seconds) and seconds > 0
    original = mne.io.read_raw_fif(path, preload=True, verbose="error")
    resaved = mne.io.read_raw_fif(tmp_path / "resaved_raw.fif", preload=True, verbose="error")
    assert resaved.ch_names == original.ch_names
    np.testing.assert_array_equal(resaved.get_data(), original.get_data())
    assert list(resaved.annotations.description) == ["stim/clas", "N2"]
    np.testing.assert_allclose(resaved.annotations.onset, [1.0, 31.5])


def test_startup_floor_is_a_fresh_interpreter_importing_the_simulator() -> None:
    seconds, packages = time_startup()
    assert math.isfinite(seconds) and seconds > 0
    # What a run cannot start without: the floor must have paid for all of it.
    assert {"sim", "firmware", "hal", "mne", "scipy", "numba", "simpy", "numpy"} <= packages

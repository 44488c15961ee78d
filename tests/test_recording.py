"""Recorded EEG as a signal source: formats, units, resampling, roles, and every error."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mne
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal
from hal import UserInputError
from hal.backends import protocol_mne_sample, protocol_sleep_physionet
from hal.recording import RecordingSource, read_raw

DREAMS = Path(__file__).parents[2] / "shared" / "data" / "dreams"
LOGGER = "hal.recording"


# --------------------------------------------------------------------------------------
# Helpers: small recordings written by MNE itself


def make_raw(
    names: list[str],
    *,
    sfreq: float = 100.0,
    seconds: float = 60.0,
    types: list[str] | str = "eeg",
    seed: int = 0,
    first_samp: int = 0,
) -> mne.io.RawArray:
    """A recording of distinct signals per channel: a sine of 5 + row Hz plus noise."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sfreq))
    t = np.arange(n) / sfreq
    data = np.vstack(
        [
            40e-6 * np.sin(2 * np.pi * (5 + row) * t) + 2e-6 * rng.standard_normal(n)
            for row in range(len(names))
        ]
    )
    info = mne.create_info(names, sfreq, types)
    return mne.io.RawArray(data, info, first_samp=first_samp, verbose=False)


def write_fif(raw: mne.io.BaseRaw, path: Path) -> Path:
    raw.save(path, overwrite=True, verbose=False)
    return path


def write_edf(raw: mne.io.BaseRaw, path: Path) -> Path:
    pytest.importorskip("edfio")
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose=False)
    return path


def one_line(err: pytest.ExceptionInfo[UserInputError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def edf_psg(tmp_path: Path) -> Path:
    """An EDF as sleep labs write them: every channel typed EEG, roles only in names."""
    raw = make_raw(["Fpz-Cz", "C3-A2", "E1-M2", "E2-M1", "Chin1-Chin2", "ECG II", "Resp"])
    return write_edf(raw, tmp_path / "psg.edf")


# --------------------------------------------------------------------------------------
# Values, units, roles


def test_fif_values_round_trip_in_volts(tmp_path: Path) -> None:
    raw = make_raw(["C3", "EOG L"], sfreq=250.0, types=["eeg", "eog"])
    path = write_fif(raw, tmp_path / "night_raw.fif")
    with RecordingSource.from_path(path) as src:
        assert src.info.sfreq == 250.0
        assert src.info.n_samples == raw.n_times
        assert src.info.description == str(path)
        assert [(c.name, c.role) for c in src.info.channels] == [("C3", "eeg"), ("EOG L", "eog")]
        # FIF stores float32 by default: equal to single precision.
        np.testing.assert_allclose(src.read(0, raw.n_times), raw.get_data(), rtol=1e-6, atol=1e-15)
        assert src.read(100, 108).dtype == np.float64


def test_edf_roles_by_name_and_values_in_volts(edf_psg: Path) -> None:
    src = hal.open_source(str(edf_psg), sfreq=100.0)
    assert [(c.name, c.role) for c in src.info.channels] == [
        ("Fpz-Cz", "eeg"),
        ("E1-M2", "eog"),
        ("Chin1-Chin2", "emg"),
        ("ECG II", "ecg"),
    ]
    expected = make_raw(["Fpz-Cz", "C3-A2", "E1-M2", "E2-M1", "Chin1-Chin2", "ECG II", "Resp"])
    want = expected.get_data(picks=["Fpz-Cz", "E1-M2", "Chin1-Chin2", "ECG II"])
    # EDF stores 16-bit integers over the physical range: a few nanovolts of quantisation.
    np.testing.assert_allclose(src.read(0, want.shape[1]), want, rtol=0, atol=1e-8)


def test_uppercase_edf_unit_is_read_as_microvolts(tmp_path: Path) -> None:
    raw = make_raw(["C3-A2", "EOG"])
    path = write_edf(raw, tmp_path / "upper.edf")
    # Rewrite the header's physical dimension "uV" as "UV", as the DREAMS recorder does;
    # MNE alone would then return microvolt numbers labelled as volts.
    blob = bytearray(path.read_bytes())
    n_signals = int(blob[252:256])
    start = 256 + 96 * n_signals
    assert blob[start : start + 2] == b"uV"
    for i in range(n_signals):
        blob[start + 8 * i : start + 8 * i + 2] = b"UV"
    path.write_bytes(bytes(blob))
    src = hal.open_source(str(path), sfreq=100.0)
    np.testing.assert_allclose(src.read(0, raw.n_times), raw.get_data(), rtol=0, atol=1e-8)


def test_auto_pick_skips_non_eeg_names_and_logs_choice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = make_raw(["EOG left", "EMG chin", "SpO2", "Pz-Oz", "Cz"])
    path = write_fif(raw, tmp_path / "auto_raw.fif")
    caplog.set_level(logging.INFO, logger=LOGGER)
    src = RecordingSource.from_path(path)
    assert src.info.ch_names == ["Pz-Oz", "EOG left", "EMG chin"]
    assert src.info.picks("eeg") == [0]
    chosen = [r.getMessage() for r in caplog.records if "no channel given" in r.getMessage()]
    assert len(chosen) == 1 and "'Pz-Oz'" in chosen[0]


def test_mne_channel_types_win_over_names(tmp_path: Path) -> None:
    raw = make_raw(["C4", "EOG-named-eeg", "HEOG"], types=["eeg", "eeg", "eog"])
    src = RecordingSource.from_path(write_fif(raw, tmp_path / "types_raw.fif"))
    # Recorded at 100 Hz, resampled to 250 Hz: it holds up to 50 Hz, as every channel.
    assert src.info.channels[1] == hal.ChannelSpec("HEOG", "eog", bandwidth_hz=50.0)


def test_channel_list_order_forced_and_disabled_roles(edf_psg: Path) -> None:
    url = edf_psg.as_uri() + "?channel=C3-A2,Fpz-Cz&eog=E2-M1&emg=none"
    src = hal.open_source(url, sfreq=100.0)
    assert [(c.name, c.role) for c in src.info.channels] == [
        ("C3-A2", "eeg"),
        ("Fpz-Cz", "eeg"),
        ("E2-M1", "eog"),
        ("ECG II", "ecg"),
    ]
    assert src.info.picks("emg") == []


def test_keywords_win_over_query_options(edf_psg: Path) -> None:
    src = hal.open_source(edf_psg.as_uri() + "?sfreq=200&channel=C3-A2", sfreq=125.0)
    assert src.info.sfreq == 125.0
    assert src.info.ch_names[0] == "C3-A2"
    assert src.info.n_samples == 60 * 125


def test_annotations_and_meas_date_survive_edf(tmp_path: Path) -> None:
    raw = make_raw(["C3-A2"])
    raw.set_meas_date(1_600_000_000)
    raw.set_annotations(mne.Annotations([5.0, 12.5], [30.0, 0.0], ["Sleep stage 2", "arousal"]))
    src = hal.open_source(str(write_edf(raw, tmp_path / "ann.edf")))
    found = {(a.description, a.onset, a.duration) for a in src.info.annotations}
    assert ("Sleep stage 2", 5.0, 30.0) in found
    assert ("arousal", 12.5, 0.0) in found
    assert src.info.meas_date == pytest.approx(1_600_000_000)


def test_annotation_onsets_count_from_first_sample(tmp_path: Path) -> None:
    # A FIF cropped from a longer recording starts at first_samp != 0: MNE's onsets are
    # on the acquisition clock, ours from the first sample of the file.
    raw = make_raw(["C3"], seconds=80.0)
    raw.set_meas_date(1_600_000_000)
    raw.set_annotations(mne.Annotations([30.0], [1.0], ["stim"]))
    raw.crop(tmin=10.0)
    src = RecordingSource.from_path(write_fif(raw, tmp_path / "cropped_raw.fif"))
    assert [(a.description, a.onset) for a in src.info.annotations] == [("stim", 20.0)]
    assert src.info.meas_date == pytest.approx(1_600_000_010)


def test_fif_without_mne_file_name_convention_does_not_warn(tmp_path: Path) -> None:
    # MNE warns about names not ending in raw.fif; filterwarnings=error proves none escapes.
    src = RecordingSource.from_path(write_fif(make_raw(["C3"]), tmp_path / "night_raw.fif"))
    renamed = tmp_path / "night.fif"
    (tmp_path / "night_raw.fif").rename(renamed)
    assert RecordingSource.from_path(renamed).info.n_samples == src.info.n_samples


def test_brainvision_reads(tmp_path: Path) -> None:
    pybv = pytest.importorskip("pybv")
    raw = make_raw(["C3", "C4"], sfreq=250.0)
    pybv.write_brainvision(
        data=raw.get_data(),
        sfreq=250.0,
        ch_names=raw.ch_names,
        fname_base="night",
        folder_out=tmp_path,
        unit="µV",
    )
    src = RecordingSource.from_path(tmp_path / "night.vhdr")
    np.testing.assert_allclose(src.read(0, raw.n_times), raw.get_data()[:1], atol=1e-9)


# --------------------------------------------------------------------------------------
# Resampling and signal checks


def test_resampling_to_250_keeps_10hz_sine_amplitude(tmp_path: Path) -> None:
    sfreq, n = 100.0, 6001  # an odd length: resampling must not derive factors from it
    t = np.arange(n) / sfreq
    raw = mne.io.RawArray(
        (50e-6 * np.sin(2 * np.pi * 10 * t))[None], mne.create_info(["Cz"], sfreq, "eeg")
    )
    src = RecordingSource.from_path(write_fif(raw, tmp_path / "sine_raw.fif"))
    assert src.info.sfreq == 250.0
    assert src.info.n_samples == 6001 * 5 // 2
    x = src.read(0, src.info.n_samples)[0, 1000:-1000]  # away from the padded edges
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    freqs = np.fft.rfftfreq(x.size, 1 / 250.0)
    assert freqs[np.argmax(spectrum)] == pytest.approx(10.0, abs=0.05)
    assert np.sqrt(2) * x.std() == pytest.approx(50e-6, rel=0.01)
    # Sample i is at i / 250 s: the phase is kept, not only the frequency.
    t250 = np.arange(src.info.n_samples) / 250.0
    want = 50e-6 * np.sin(2 * np.pi * 10 * t250)[1000:-1000]
    np.testing.assert_allclose(x, want, atol=0.5e-6)


def test_odd_rate_resamples_to_device_rate(tmp_path: Path) -> None:
    raw = make_raw(["EEG 001"], sfreq=600.614990234375, seconds=40.0)
    src = RecordingSource.from_path(write_fif(raw, tmp_path / "odd_raw.fif"))
    assert src.info.sfreq == 250.0
    assert src.info.n_samples == int(raw.n_times * 250 / raw.info["sfreq"])


def test_non_finite_samples_become_nan_and_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = make_raw(["C3", "C4"], sfreq=250.0)
    data = raw.get_data()
    data[0, 1000:1100] = np.nan
    data[1, 5000] = np.inf
    raw = mne.io.RawArray(data, raw.info, verbose=False)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = RecordingSource.from_path(write_fif(raw, tmp_path / "gaps_raw.fif"), channel="C3,C4")
    x = src.read(0, src.info.n_samples)
    assert np.isnan(x[0, 1000:1100]).all() and np.isnan(x[1, 5000])
    assert np.count_nonzero(np.isnan(x)) == 101
    messages = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(messages) == 1 and "101" in messages[0]


def test_nan_gap_survives_resampling(tmp_path: Path) -> None:
    raw = make_raw(["C3"], sfreq=100.0)
    data = raw.get_data()
    data[0, 2000:2100] = np.nan  # 20 s .. 21 s
    raw = mne.io.RawArray(data, raw.info, verbose=False)
    x = RecordingSource.from_path(write_fif(raw, tmp_path / "gap_raw.fif")).read(0, 15000)[0]
    assert np.isnan(x[5000:5248]).all()  # 20 s .. 21 s at 250 Hz
    assert np.isfinite(x[:4990]).all() and np.isfinite(x[5260:]).all()


def test_flat_stretch_is_kept_and_summarised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = make_raw(["C3", "C4"], sfreq=250.0)
    data = raw.get_data()
    data[1, 2500:3500] = 1e-3  # 4 s clipped at the rail
    raw = mne.io.RawArray(data, raw.info, verbose=False)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = RecordingSource.from_path(write_fif(raw, tmp_path / "flat_raw.fif"), channel="C3,C4")
    clipped = src.read(2500, 3500)[1]  # returned as it is (float32 in the FIF)
    assert np.ptp(clipped) == 0 and clipped[0] == pytest.approx(1e-3)
    flat = [r.getMessage() for r in caplog.records if "flat" in r.getMessage()]
    assert len(flat) == 1
    assert "C4: 1 (4.0 s)" in flat[0] and "C3:" not in flat[0]


# --------------------------------------------------------------------------------------
# The SignalSource contract


def test_read_clips_is_read_only_and_close_is_final(tmp_path: Path) -> None:
    src = RecordingSource.from_path(write_fif(make_raw(["C3"]), tmp_path / "r_raw.fif"))
    assert isinstance(src, hal.SignalSource)
    n = src.info.n_samples
    assert src.read(n - 4, n + 100).shape == (1, 4)
    assert src.read(n + 10, n + 20).shape == (1, 0)
    with pytest.raises(ValueError, match="read-only"):
        src.read(0, 8)[0, 0] = 1.0
    with pytest.raises(ValueError, match="invalid read range"):
        src.read(-1, 8)
    with src:
        pass
    src.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        src.read(0, 8)


# --------------------------------------------------------------------------------------
# Errors: one line each, naming the file and what to do


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(tmp_path / "nope.edf"))
    assert one_line(err) == f"No such recording: {tmp_path / 'nope.edf'}"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "night.edf").write_bytes(b"")
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(tmp_path))
    assert "is a folder, not a recording" in one_line(err)
    assert "night.edf" in str(err.value)


def test_random_bytes_with_edf_extension(tmp_path: Path) -> None:
    path = tmp_path / "noise.edf"
    path.write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    assert one_line(err).startswith(f"Cannot read {path}: ")
    assert "Bad EDF file" in str(err.value)


def test_random_bytes_fif_keeps_mne_reason(tmp_path: Path) -> None:
    path = tmp_path / "noise_raw.fif"
    path.write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    assert str(path) in one_line(err) and "file id tag" in str(err.value)


def test_edf_cut_in_half(edf_psg: Path, tmp_path: Path) -> None:
    blob = edf_psg.read_bytes()
    path = tmp_path / "half.edf"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    assert "truncated" in one_line(err) and str(path) in str(err.value)


def test_edf_header_only(edf_psg: Path, tmp_path: Path) -> None:
    path = tmp_path / "header.edf"
    path.write_bytes(edf_psg.read_bytes()[:300])
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    assert one_line(err).startswith(f"Cannot read {path}: ")


def test_unknown_extension_lists_formats(tmp_path: Path) -> None:
    path = tmp_path / "night.xyz"
    path.write_text("not eeg")
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    message = one_line(err)
    assert "Unsupported file type .xyz" in message
    assert all(ext in message for ext in (".edf", ".bdf", ".fif", ".vhdr", ".set"))


def test_wrong_channel_lists_and_suggests(edf_psg: Path) -> None:
    with pytest.raises(UserInputError) as err:
        hal.open_source(edf_psg.as_uri() + "?channel=C3A2")
    message = one_line(err)
    assert "Channel 'C3A2' not found" in message
    assert "'Fpz-Cz'" in message and "'Resp'" in message
    assert message.endswith("Did you mean 'C3-A2'?")


def test_wrong_aux_channel(edf_psg: Path) -> None:
    with pytest.raises(UserInputError, match="Channel 'EOG' not found"):
        hal.open_source(str(edf_psg), eog="EOG")


def test_channel_in_two_roles(edf_psg: Path) -> None:
    with pytest.raises(UserInputError, match="cannot be both eog and eeg"):
        hal.open_source(str(edf_psg), channel="E1-M2", eog="E1-M2")


def test_unknown_query_key(edf_psg: Path) -> None:
    with pytest.raises(UserInputError) as err:
        hal.open_source(edf_psg.as_uri() + "?chanel=C3-A2")
    message = one_line(err)
    assert "'chanel'" in message and "'channel'" in message and "'min_sfreq'" in message


def test_bad_option_value(edf_psg: Path) -> None:
    with pytest.raises(UserInputError, match="'sfreq' option: expected a number"):
        hal.open_source(edf_psg.as_uri() + "?sfreq=fast")


def test_shorter_than_one_epoch(tmp_path: Path) -> None:
    path = write_fif(make_raw(["C3"], seconds=20.0), tmp_path / "short_raw.fif")
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    assert "lasts 20 s, shorter than one 30-s epoch" in one_line(err)


def test_rate_below_min_sfreq_and_how_to_allow_it(tmp_path: Path) -> None:
    path = write_fif(make_raw(["C3"], sfreq=50.0), tmp_path / "slow_raw.fif")
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    message = one_line(err)
    assert "sampled at 50 Hz, below min_sfreq=100 Hz" in message
    # Each way it names works: the command line's option, the keyword, the URL's query.
    assert "--min-sfreq 50" in message
    assert "min_sfreq=50 (Python)" in message
    assert "?min_sfreq=50" in message
    assert hal.open_source(str(path), min_sfreq=50).info.sfreq == 250.0
    assert hal.open_source(path.as_uri() + "?min_sfreq=50").info.sfreq == 250.0


def test_a_recording_resampled_up_says_what_band_it_holds(tmp_path: Path) -> None:
    slow = write_fif(make_raw(["C3"], sfreq=50.0), tmp_path / "slow_raw.fif")
    assert hal.open_source(str(slow), min_sfreq=50).info.bandwidth_hz == 25.0
    fast = write_fif(make_raw(["C3"], sfreq=500.0), tmp_path / "fast_raw.fif")
    assert hal.open_source(str(fast)).info.bandwidth_hz is None  # the device's full band


def test_channel_without_finite_sample(tmp_path: Path) -> None:
    raw = make_raw(["C3", "EOG"], types=["eeg", "eog"])
    data = raw.get_data()
    data[1] = np.nan
    path = write_fif(mne.io.RawArray(data, raw.info, verbose=False), tmp_path / "dead_raw.fif")
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    assert "'EOG'" in one_line(err) and "contains no finite sample" in str(err.value)
    assert hal.open_source(str(path), eog="none").info.ch_names == ["C3"]


def test_file_url_with_host(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="absolute path"):
        hal.open_source("file://night.edf")


def test_plain_path_with_space_and_percent(tmp_path: Path) -> None:
    # hal.open_source percent-encodes a plain path into a file:// URL; it must decode back.
    path = write_fif(make_raw(["C3"]), tmp_path / "my night 100%_raw.fif")
    assert hal.open_source(str(path)).info.description == str(path)


def test_read_raw_is_lazy(edf_psg: Path) -> None:
    raw = read_raw(edf_psg)
    assert not raw.preload and "ECG II" in raw.ch_names


# --------------------------------------------------------------------------------------
# DREAMS (real sleep EEG, read from ../shared when it is there)


@pytest.fixture
def excerpt3() -> Path:
    path = DREAMS / "excerpt3.edf"
    if not path.is_file():
        pytest.skip(f"DREAMS data not found at {DREAMS}")
    return path


def test_dreams_excerpt3_opens_at_50_hz_with_min_sfreq(excerpt3: Path) -> None:
    with pytest.raises(UserInputError, match="sampled at 50 Hz"):
        hal.open_source(str(excerpt3), channel="C3-A1")
    src = hal.open_source(excerpt3.as_uri() + "?channel=C3-A1&min_sfreq=50")
    assert src.info.ch_names[0] == "C3-A1"
    assert src.info.picks("eog") and src.info.picks("emg")
    assert src.info.sfreq == 250.0 and src.info.duration == pytest.approx(1800.0)
    eeg = src.read(0, src.info.n_samples)[0]
    # Real sleep EEG in volts: tens of microvolts (the header's "UV" is honoured).
    assert 2e-6 < np.nanstd(eeg) < 200e-6


# --------------------------------------------------------------------------------------
# sleep-physionet:// and mne-sample:// (never the network in tests)


def test_physionet_offline_error_is_fast_and_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHYSIONET_SLEEP_PATH", str(tmp_path))
    monkeypatch.setattr(protocol_sleep_physionet, "_unreachable", lambda url, timeout: "offline")
    start = time.monotonic()
    with pytest.raises(UserInputError) as err:
        hal.open_source("sleep-physionet://0/1")
    assert time.monotonic() - start < 5
    message = one_line(err)
    assert "SC4001E0-PSG.edf" in message and str(tmp_path) in message
    assert "fetch_data(subjects=[0], recording=[1])" in message
    assert "pass the PSG file's path instead" in message


def test_physionet_probe_fails_fast_without_a_server() -> None:
    start = time.monotonic()
    reason = protocol_sleep_physionet._unreachable("http://127.0.0.1:9/", 2.0)
    assert reason is not None
    assert time.monotonic() - start < 4


def test_physionet_bad_subject() -> None:
    with pytest.raises(UserInputError, match="no subject 39 night 1"):
        hal.open_source("sleep-physionet://39/1")
    with pytest.raises(UserInputError, match="SUBJECT/NIGHT"):
        hal.open_source("sleep-physionet://zero/1")


def test_physionet_local_files_with_hypnogram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "physionet-sleep-data"
    folder.mkdir()
    write_edf(
        make_raw(["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "EMG submental"]),
        folder / "SC4001E0-PSG.edf",
    )
    hyp = make_raw(["dummy"])
    hyp.set_annotations(mne.Annotations([0.0, 30.0], [30.0, 30.0], ["Sleep stage W", "N1"]))
    write_edf(hyp, folder / "SC4001EC-Hypnogram.edf")
    monkeypatch.setenv("PHYSIONET_SLEEP_PATH", str(tmp_path))

    def no_network(url: str, timeout: float) -> str:
        raise AssertionError("files are local: the network must not be probed")

    monkeypatch.setattr(protocol_sleep_physionet, "_unreachable", no_network)
    src = hal.open_source("sleep-physionet://0/1", sfreq=100.0)
    assert src.info.ch_names == ["EEG Fpz-Cz", "EOG horizontal", "EMG submental"]
    assert ("Sleep stage W", 0.0) in {(a.description, a.onset) for a in src.info.annotations}
    assert src.info.description == str(folder / "SC4001E0-PSG.edf")


def test_mne_sample_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNE_DATASETS_SAMPLE_PATH", str(tmp_path))
    with pytest.raises(UserInputError) as err:
        hal.open_source("mne-sample://")
    message = one_line(err)
    assert "sample data set is not in" in message and "mne.datasets.sample.data_path()" in message


def test_mne_sample_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "MNE-sample-data" / protocol_mne_sample.RAW_FILE.parent
    folder.mkdir(parents=True)
    raw = make_raw(
        ["MEG 0113", "EEG 001", "EEG 002", "EEG 003", "EOG 061", "STI 014"],
        sfreq=600.614990234375,
        seconds=35.0,
        types=["grad", "eeg", "eeg", "eeg", "eog", "stim"],
    )
    raw.info["bads"] = ["EEG 002"]
    write_fif(raw, folder / protocol_mne_sample.RAW_FILE.name)
    monkeypatch.setenv("MNE_DATASETS_SAMPLE_PATH", str(tmp_path))
    src = hal.open_source("mne-sample://")
    assert [(c.name, c.role) for c in src.info.channels] == [
        ("EEG 001", "eeg"),
        ("EEG 003", "eeg"),
        ("EOG 061", "eog"),
    ]
    assert src.info.sfreq == 250.0


# --------------------------------------------------------------------------------------
# Speed (run with -m slow)


@pytest.mark.slow
def test_eight_hour_night_loads_in_seconds(tmp_path: Path) -> None:
    raw = make_raw(["C3-A2", "E1-M2", "Chin1-Chin2"], seconds=8 * 3600.0)
    path = write_fif(raw, tmp_path / "night8h_raw.fif")
    start = time.perf_counter()
    src = RecordingSource.from_path(path)
    elapsed = time.perf_counter() - start
    assert src.info.n_samples == 8 * 3600 * 250
    assert elapsed < 30.0, f"loading and resampling 8 h took {elapsed:.1f} s"


# --------------------------------------------------------------------------------------
# A channel of another type than claimed


def _night_as_raw(seconds: float = 120.0) -> mne.io.RawArray:
    """The virtual sleeper's signals as a plain recording (all typed EEG, as labs do)."""
    from sim.sleeper import VirtualSleeper

    sl = VirtualSleeper(seed=4, hours=seconds / 3600, artifacts=False)
    x = sl.read(0, sl.info.n_samples)
    names = [c.name for c in sl.info.channels][:5]  # C4-M1 Fpz-M2 E1-M2 Chin ECG
    info = mne.create_info(names, sl.info.sfreq, "eeg")
    return mne.io.RawArray(x[:5], info, verbose=False)


@pytest.mark.parametrize(
    ("channel", "says"),
    [("C4-M1", None), ("ECG", "carries a regular heartbeat"), ("Chin", "above 30 Hz")],
)
def test_a_channel_that_is_not_what_its_role_says_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, channel: str, says: str | None
) -> None:
    path = write_fif(_night_as_raw(), tmp_path / "night_raw.fif")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        src = RecordingSource.from_path(path, channel=channel, ecg="none", emg="none")
    assert src.info.channels[0].name == channel  # handled: the run goes on with it
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if says is None:
        assert not [w for w in warnings if "used as EEG" in w]
    else:
        assert any(says in w and channel in w for w in warnings), warnings


def _flat_by_brute_force(x: np.ndarray, bad: np.ndarray, width: int) -> tuple[int, int]:
    """Every window's variance with np.var: the definition the running sums implement."""
    from hal.recording import FLAT_STD_V

    covered = np.zeros(x.size, dtype=bool)
    for s in range(x.size - width + 1):
        w = slice(s, s + width)
        if not bad[w].any() and np.var(x[w]) < FLAT_STD_V**2:
            covered[w] = True
    runs = np.count_nonzero(np.diff(np.concatenate(([0], covered.astype(np.int8), [0]))) == 1)
    return int(runs), int(covered.sum())


@settings(max_examples=40, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(st.sampled_from(["flat", "lively", "bad"]), st.integers(1, 1500)),
        min_size=1,
        max_size=8,
    ),
    offset=st.sampled_from([0.0, 3e-3, -0.2]),
    seed=st.integers(0, 1000),
)
def test_flat_stretches_equal_the_window_definition(pieces, offset, seed):
    """The one-pass search finds the stretches every 1-s window's variance defines, next
    to a large offset, with bad samples excluded from every window holding them."""
    from hal.recording import _flat_stretches

    rng = np.random.default_rng(seed)
    parts, bad_parts = [], []
    for kind, n in pieces:
        # Flat: 0.01 uV of noise; lively: 20 uV; far from the 0.1-uV threshold either way.
        scale = 1e-8 if kind == "flat" else 2e-5
        parts.append(offset + rng.standard_normal(n) * scale)
        bad_parts.append(np.full(n, kind == "bad"))
    x, bad = np.concatenate(parts), np.concatenate(bad_parts)
    sfreq = 50.0  # 1-s windows of 50 samples
    got = _flat_stretches(x[np.newaxis], bad[np.newaxis], sfreq)[0]
    assert got == _flat_by_brute_force(x, bad, 50)


# --------------------------------------------------------------------------------------
# EDF written byte by byte: what MNE's exporter cannot write (duplicate labels, odd
# units, a rate per signal, EDF+D records with gaps)


def edf_bytes(
    signals: list[tuple[str, bytes, np.ndarray, int]],
    *,
    reserved: str = "",
    record_onsets: list[float] | None = None,
    annotations: tuple[tuple[float, float, str], ...] = (),
    physical: float = 1000.0,
    record_s: float = 1.0,
) -> bytes:
    """An EDF file: ``(label, unit bytes, values, samples per record)`` per signal.

    Values are in the unit's numbers, stored over +-``physical``. An ``EDF+C``/``EDF+D``
    ``reserved`` adds the annotation signal: each record's time stamp (``record_onsets``,
    default back to back) and the ``(onset, duration, text)`` annotations starting in it.
    """

    def field(value: object, width: int) -> bytes:
        text = str(value).encode("latin-1")
        assert len(text) <= width
        return text.ljust(width)

    n_records = len(signals[0][2]) // signals[0][3]
    rows = [(label.encode("latin-1"), unit, spr) for label, unit, _, spr in signals]
    plus = reserved.startswith("EDF+")
    if plus:
        rows.append((b"EDF Annotations", b"", 30))
    ns = len(rows)
    head = field("0", 8) + field("X X X X", 80) + field("Startdate 01-MAR-2024 X X X", 80)
    head += field("01.03.24", 8) + field("22.30.05", 8) + field(256 * (ns + 1), 8)
    head += field(reserved, 44) + field(n_records, 8) + field(f"{record_s:g}", 8) + field(ns, 4)
    head += b"".join(label.ljust(16) for label, _, _ in rows)
    head += b"".join(field("", 80) for _ in rows)
    head += b"".join(unit.ljust(8) for _, unit, _ in rows)
    head += b"".join(field(-physical if i < len(signals) else -1, 8) for i in range(ns))
    head += b"".join(field(physical if i < len(signals) else 1, 8) for i in range(ns))
    head += b"".join(field(-32768, 8) for _ in rows) + b"".join(field(32767, 8) for _ in rows)
    head += b"".join(field("", 80) for _ in rows)
    head += b"".join(field(spr, 8) for _, _, spr in rows)
    head += b"".join(field("", 32) for _ in rows)
    onsets = record_onsets if record_onsets is not None else list(range(n_records))
    body = []
    for r in range(n_records):
        for _, _, values, spr in signals:
            seg = values[r * spr : (r + 1) * spr] / physical * 32767.5 - 0.5
            body.append(np.round(seg).clip(-32768, 32767).astype("<i2").tobytes())
        if plus:
            tal = f"+{onsets[r]:g}\x14\x14\x00"
            for onset, duration, text in annotations:
                if onsets[r] <= onset < onsets[r] + record_s:
                    tal += f"+{onset:g}\x15{duration:g}\x14{text}\x14\x00"
            body.append(tal.encode().ljust(60, b"\x00"))
    return head + b"".join(body)


def uv_sine(freq: float, sfreq: float, seconds: float, start: float = 0.0) -> np.ndarray:
    """40 uV of a sine, in microvolt numbers, at times ``start + i / sfreq``."""
    t = start + np.arange(round(seconds * sfreq)) / sfreq
    return 40.0 * np.sin(2 * np.pi * freq * t)


def test_dc_offset_leaves_no_ripple_after_resampling(tmp_path: Path) -> None:
    # A 20 mV electrode offset: the polyphase filter's DC gain differs slightly from
    # phase to phase, which once left a 20 uV p-p ripple at 50 Hz (100 -> 250 Hz).
    sfreq, n = 100.0, 6000
    t = np.arange(n) / sfreq
    data = 20e-3 + 20e-6 * np.sin(2 * np.pi * 3 * t)
    data[2000:2100] = np.nan  # a gap must still come back as NaN
    raw = mne.io.RawArray(data[None], mne.create_info(["C3"], sfreq, "eeg"), verbose=False)
    src = RecordingSource.from_path(write_fif(raw, tmp_path / "dc_raw.fif"))
    x = src.read(0, src.info.n_samples)[0]
    t250 = np.arange(x.size) / 250.0
    error = x - (20e-3 + 20e-6 * np.sin(2 * np.pi * 3 * t250))
    assert np.isnan(x[5000:5248]).all()
    for part in (error[500:4900], error[5400:-500]):  # away from the edges and the gap
        assert np.isfinite(part).all()
        assert np.ptp(part) < 1e-6  # float32 in the FIF: ~2 nV steps at 20 mV


def test_duplicate_labels_with_uppercase_unit_are_read_as_microvolts(tmp_path: Path) -> None:
    x, y = uv_sine(5, 100, 60), uv_sine(7, 100, 60)
    path = tmp_path / "dup.edf"
    path.write_bytes(edf_bytes([("EEG", b"UV", x, 100), ("EEG", b"UV", y, 100)]))
    src = hal.open_source(str(path), channel="EEG-0,EEG-1", sfreq=100.0)
    np.testing.assert_allclose(src.read(0, x.size), np.vstack([x, y]) * 1e-6, atol=1e-7)


def test_micro_sign_in_utf8_is_read_as_microvolts(tmp_path: Path) -> None:
    x = uv_sine(5, 100, 60)
    path = tmp_path / "utf8.edf"
    path.write_bytes(edf_bytes([("C3-A2", "µV".encode(), x, 100)]))  # C2 B5 56
    src = hal.open_source(str(path), sfreq=100.0)
    np.testing.assert_allclose(src.read(0, x.size)[0], x * 1e-6, atol=1e-7)


@pytest.mark.parametrize("fmt", ["edf", "fif"])
def test_non_integer_rate_keeps_the_duration_and_the_last_epoch(tmp_path: Path, fmt: str) -> None:
    sfreq = 127.9
    n = 3837  # exactly 30.000 s
    if fmt == "edf":  # an exact rate: 3 records of 10 s, 1279 samples each
        path = tmp_path / "r127_9.edf"
        path.write_bytes(edf_bytes([("C3", b"uV", uv_sine(5, sfreq, 30), 1279)], record_s=10))
    else:  # FIF keeps the rate in single precision: 30 s is a hair less
        path = write_fif(make_raw(["C3"], sfreq=sfreq, seconds=30.0), tmp_path / "r127_9_raw.fif")
    src = RecordingSource.from_path(path)
    assert src.info.n_samples == round(n * 250 / sfreq) == 7500
    assert src.info.duration == pytest.approx(30.0)
    assert np.isfinite(src.read(0, src.info.n_samples)).all()


def test_each_edf_channel_is_judged_at_its_own_rate(tmp_path: Path) -> None:
    # MNE upsamples slower signals to the fastest: a 50-Hz EEG beside a 200-Hz chin EMG.
    path = tmp_path / "mixed.edf"
    path.write_bytes(
        edf_bytes(
            [("C3-A2", b"uV", uv_sine(5, 50, 60), 50), ("Chin", b"uV", uv_sine(40, 200, 60), 200)]
        )
    )
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    message = one_line(err)
    assert "C3-A2" in message and "sampled at 50 Hz" in message and "min_sfreq=100" in message
    assert "--min-sfreq 50" in message
    src = hal.open_source(str(path), min_sfreq=50)
    assert src.info.ch_names == ["C3-A2", "Chin"]
    assert src.info.bandwidth_hz == 25.0  # the slowest picked channel's Nyquist
    # Each channel its own: the chin holds up to 100 Hz, below the device's 125 Hz.
    assert [c.bandwidth_hz for c in src.info.channels] == [25.0, 100.0]
    # A 200-Hz EEG with a 100-Hz EOG: accepted, the band is the EOG's.
    path2 = tmp_path / "mixed2.edf"
    path2.write_bytes(
        edf_bytes(
            [("C3-A2", b"uV", uv_sine(5, 200, 60), 200), ("EOG", b"uV", uv_sine(1, 100, 60), 100)]
        )
    )
    src2 = hal.open_source(str(path2))
    assert src2.info.ch_names == ["C3-A2", "EOG"] and src2.info.bandwidth_hz == 50.0
    assert [c.bandwidth_hz for c in src2.info.channels] == [100.0, 50.0]


def test_edf_plus_d_records_keep_their_time_with_gaps_as_nan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 60 records of 1 s; after the 30th, 20 s without data: records 30.. start at 50 s.
    onsets = [float(r if r < 30 else r + 20) for r in range(60)]
    x = np.concatenate([uv_sine(5, 100, 1, start=on) for on in onsets])
    path = tmp_path / "disc.edf"
    anns = ((10.5, 0.0, "lights off"), (55.25, 5.0, "arousal"), (75.5, 0.0, "late"))
    path.write_bytes(
        edf_bytes(
            [("C3-A2", b"uV", x, 100)], reserved="EDF+D", record_onsets=onsets, annotations=anns
        )
    )
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = hal.open_source(str(path))
    assert src.info.n_samples == 80 * 250
    y = src.read(0, src.info.n_samples)[0]
    assert np.isnan(y[30 * 250 : 50 * 250]).all()
    assert np.isfinite(y[: 30 * 250 - 10]).all() and np.isfinite(y[50 * 250 + 10 :]).all()
    # Every sample at its time: after the gap too.
    want = 40e-6 * np.sin(2 * np.pi * 5 * np.arange(y.size) / 250.0)
    np.testing.assert_allclose(y[51 * 250 : 79 * 250], want[51 * 250 : 79 * 250], atol=1e-6)
    found = {(a.description, a.onset, a.duration) for a in src.info.annotations}
    assert found == {("lights off", 10.5, 0.0), ("arousal", 55.25, 5.0), ("late", 75.5, 0.0)}
    gaps = [r.getMessage() for r in caplog.records if "gap" in r.getMessage()]
    assert len(gaps) == 1 and "EDF+D" in gaps[0] and "1 gap(s)" in gaps[0] and "20.0 s" in gaps[0]
    assert not [r for r in caplog.records if "non-finite" in r.getMessage()]


def test_edf_plus_d_with_overlapping_records_is_a_damaged_file(tmp_path: Path) -> None:
    # Record 3 claims to start half-way through record 2: no clock can hold both.
    onsets = [0.0, 1.0, 1.5] + [float(r) for r in range(3, 40)]
    x = np.concatenate([uv_sine(5, 100, 1, start=on) for on in onsets])
    path = tmp_path / "overlap.edf"
    path.write_bytes(edf_bytes([("C3-A2", b"uV", x, 100)], reserved="EDF+D", record_onsets=onsets))
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    message = one_line(err)
    assert "damaged EDF+D (discontinuous) file" in message
    assert "data record 3 starts at 1.5 s, before record 2 ends (2 s)" in message


def test_bad_channels_are_not_chosen_by_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = make_raw(["C3", "C4", "EOG L", "EOG R"], types=["eeg", "eeg", "eog", "eog"])
    raw.info["bads"] = ["C3", "EOG L"]
    path = write_fif(raw, tmp_path / "bads_raw.fif")
    assert RecordingSource.from_path(path).info.ch_names == ["C4", "EOG R"]
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = RecordingSource.from_path(path, channel="C3")
    assert src.info.ch_names == ["C3", "EOG R"]  # named: used, with a warning
    marked = [r.getMessage() for r in caplog.records if "marked bad" in r.getMessage()]
    assert len(marked) == 1 and "C3" in marked[0]


def test_impossible_amplitude_is_an_error_with_a_units_way_out(tmp_path: Path) -> None:
    x = uv_sine(5, 100, 60)
    path = tmp_path / "nounit.edf"
    path.write_bytes(edf_bytes([("C3-A2", b"", x, 100)]))  # microvolt numbers, no unit
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(path))
    message = one_line(err)
    assert "C3-A2" in message and "impossible for a biosignal" in message
    assert f"{path.as_uri()}?units=uV" in message
    src = hal.open_source(path.as_uri() + "?units=uV", sfreq=100.0)
    np.testing.assert_allclose(src.read(0, x.size)[0], x * 1e-6, atol=1e-7)
    # The option overrides a unit the header states too (here, wrongly, "V").
    path_v = tmp_path / "volts.edf"
    path_v.write_bytes(edf_bytes([("C3-A2", b"V", x, 100)]))
    src = hal.open_source(str(path_v), units="uV", sfreq=100.0)
    np.testing.assert_allclose(src.read(0, x.size)[0], x * 1e-6, atol=1e-7)
    with pytest.raises(UserInputError, match="'units' option: expected V, mV, uV or nV"):
        hal.open_source(path.as_uri() + "?units=furlong")
    # A DC-coupled recording drifting over 150 mV is possible: judged second by second.
    raw = make_raw(["C3"])
    drifting = raw.get_data() + np.linspace(0.0, 0.15, raw.n_times)
    raw = mne.io.RawArray(drifting, raw.info, verbose=False)
    assert RecordingSource.from_path(write_fif(raw, tmp_path / "drift_raw.fif")).info.n_samples


def test_damaged_files_say_so_in_one_line(tmp_path: Path, edf_psg: Path) -> None:
    empty = tmp_path / "empty_raw.fif"
    empty.write_bytes(b"")
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(empty))
    assert one_line(err) == f"Cannot read {empty}: the file is empty (0 bytes)."
    header = tmp_path / "header.edf"
    header.write_bytes(edf_psg.read_bytes()[:300])
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(header))
    assert "looks damaged or truncated" in one_line(err)
    full = write_fif(make_raw(["C3"], seconds=120.0), tmp_path / "full_raw.fif")
    cut = tmp_path / "cut_raw.fif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    with pytest.raises(UserInputError) as err:
        hal.open_source(str(cut))
    assert str(cut) in one_line(err) and "looks damaged or truncated" in str(err.value)


def test_later_part_of_a_split_fif_says_the_recording_starts_earlier(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = make_raw(["C3"], sfreq=250.0, seconds=1200.0)
    # MNE keeps 1 MiB of each part for its end tags: ~650 kB of samples per part.
    raw.save(tmp_path / "night_raw.fif", split_size=1_700_000, buffer_size_sec=1, verbose=False)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    RecordingSource.from_path(tmp_path / "night_raw.fif")
    assert not [r for r in caplog.records if "continuation" in r.getMessage()]
    RecordingSource.from_path(tmp_path / "night_raw-1.fif")
    parts = [r.getMessage() for r in caplog.records if "continuation" in r.getMessage()]
    assert len(parts) == 1 and "starts earlier" in parts[0]

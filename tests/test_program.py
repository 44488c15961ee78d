"""Programs are validated completely before the night starts."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.program import builtin_programs, load_program
from hal.base import UserInputError


def test_builtins_load():
    assert {"clas", "sham"} <= set(builtin_programs())
    clas = load_program("clas")
    assert clas.gate.stages == ("N2", "N3") and not clas.sham
    assert load_program("sham").sham


def test_unknown_builtin_suggests_the_nearest():
    with pytest.raises(UserInputError, match=r"'program'.*got 'clsa'.*Did you mean 'clas'"):
        load_program("clsa")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nvolume = 3', r"volume.*Allowed values are"),
        ('name = "x"\n[trigger]\nthreshhold_uv = -40', r"Did you mean 'threshold_uv'"),
        ('name = "x"\n[gate]\nstages = ["N4"]', r"gate.stages.*got 'N4'"),
        ('name = "x"\n[gate]\nstages = []', r"gate.stages.*could never act"),
        ('name = "x"\n[stimulus]\nlevel_db = "loud"', r"stimulus.level_db.*expected int or float"),
        ('name = "x"\n[stimulus]\nduration_s = 9', r"stimulus.duration_s.*expected 0.001 to 5.0"),
        ('name = "x"\n[stimulus]\nmodality = "smell"', r"stimulus.modality.*got 'smell'"),
        ('name = "x"\n[trigger]\nkind = "magic"', r"trigger.kind.*got 'magic'"),
        ('name = "x"\nsham = 1', r"sham.*expected bool"),
        ('description = "no name"', r"Missing field 'name'"),
        ('name = "x"\n[gate\n', r"Malformed program file"),
        ('name = "x"\n[gate]\nstop_at = ["N5"]', r"gate.stop_at.*got 'N5'"),
        ('name = "x"\n[trigger]\nkind = "alpha-phase"\ntarget_deg = 270', r"trigger.target_deg"),
        (
            'name = "x"\n[trigger]\nkind = "alpha-phase"\nmin_amplitude_uv = -1',
            r"trigger.min_amplitude_uv.*expected 0.0 to 200.0",
        ),
        ('name = "x"\n[cue]\ntrain = 3', r"\[cue\].*only the 'rem-cue' trigger"),
        ('name = "x"\n[trigger]\nkind = "rem-cue"\n[cue]\ntrain = 0', r"cue.train.*1 to 20"),
        ('name = "x"\n[trigger]\nkind = "rem-cue"\n[cue]\npause = 3', r"Did you mean 'pause_s'"),
        (
            'name = "x"\n[trigger]\nkind = "rem-cue"\n[cue]\nmax_trains = 2.5',
            r"cue.max_trains.*expected int",
        ),
    ],
)
def test_bad_program_files_name_the_field(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(UserInputError, match=message):
        load_program(str(path))


def test_missing_program_file():
    with pytest.raises(UserInputError, match="No such program file"):
        load_program("/nonexistent/prog.toml")


def test_tmr_cycles_through_its_cues():
    tmr = load_program("tmr")
    assert tmr.stimulus.sounds and [tmr.stimulus.sound_for(k) for k in range(4)] == [
        "tone-440",
        "tone-660",
        "tone-880",
        "tone-440",
    ]


def write_wav(path, frames=800):
    """A short, valid 16-bit mono WAV file."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * frames)
    return path


def test_cue_files_are_resolved_next_to_the_program(tmp_path):
    (tmp_path / "cues").mkdir()
    write_wav(tmp_path / "cues" / "a.wav")
    path = tmp_path / "p.toml"
    path.write_text('name = "x"\n[stimulus]\nsounds = ["cues/a.wav", "chime"]')
    assert load_program(str(path)).stimulus.sounds == ("cues/a.wav", "chime")
    path.write_text('name = "x"\n[stimulus]\nsounds = ["cues/missing.wav"]')
    with pytest.raises(UserInputError, match=r"Missing stimulus file.*sounds\[0\].*missing.wav"):
        load_program(str(path))
    path.write_text('name = "x"\n[stimulus]\nsound = "pinkk"')
    with pytest.raises(UserInputError, match="Did you mean 'pink'"):
        load_program(str(path))


def test_a_program_the_limits_forbid_is_refused_before_the_night():
    from firmware.program import check_against_limits, parse_program
    from hal.interlock import Limits

    loud = parse_program({"name": "loud", "stimulus": {"level_db": 58.0}})
    with pytest.raises(UserInputError, match=r"stimulus.level_db = 58.0.*max_level_db = 55.0"):
        check_against_limits(loud, Limits())
    long = parse_program({"name": "long", "stimulus": {"duration_s": 0.5}})
    with pytest.raises(UserInputError, match=r"stimulus.duration_s.*max_pulse_s"):
        check_against_limits(long, Limits())
    check_against_limits(load_program("clas"), Limits())  # the built-ins fit the defaults


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"RIFF", r"stimulus.sound.*x\.wav.*not a valid WAV file"),
        (b"just some text, not audio", r"stimulus.sound.*x\.wav.*not a valid WAV file"),
        (b"", r"stimulus.sound.*x\.wav.*not a valid WAV file"),
        ("truncated", r"stimulus.sound.*x\.wav.*not a valid WAV file"),
        (None, r"stimulus.sound.*x\.wav.*no audio"),
    ],
)
def test_an_invalid_wav_cue_is_refused_when_the_program_loads(tmp_path, content, message):
    wav = tmp_path / "x.wav"
    if content is None:
        write_wav(wav, frames=0)
    elif content == "truncated":  # the data chunk ends before its header says
        wav.write_bytes(write_wav(wav).read_bytes()[:-100])
    else:
        wav.write_bytes(content)
    path = tmp_path / "p.toml"
    path.write_text('name = "x"\n[stimulus]\nsound = "x.wav"')
    with pytest.raises(UserInputError, match=message) as err:
        load_program(str(path))
    assert "\n" not in str(err.value)
    write_wav(wav)
    assert load_program(str(path)).stimulus.sound == "x.wav"


def test_float_and_24_bit_extensible_wav_cues_are_accepted(tmp_path):
    import struct

    from scipy.io import wavfile

    wavfile.write(tmp_path / "f.wav", 44100, np.zeros(441, dtype=np.float32))
    # 24-bit PCM in WAVE_FORMAT_EXTENSIBLE, as audio editors write it.
    guid = bytes.fromhex("0100000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 48000, 144000, 3, 24, 22, 24, 4) + guid
    data = bytes(3 * 480)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "e.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    path = tmp_path / "p.toml"
    path.write_text('name = "x"\n[stimulus]\nsounds = ["f.wav", "e.wav"]')
    assert load_program(str(path)).stimulus.sounds == ("f.wav", "e.wav")

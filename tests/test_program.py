"""Programs are validated completely before the night starts."""

from __future__ import annotations

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

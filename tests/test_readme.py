"""The README's quick start cannot rot: CI runs line 2, this test runs line 1."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from conftest import REPO


def quickstart_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no Quick start bash block"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2, f"the quick start is exactly two lines, got {lines}"
    return lines


def test_ci_runs_the_readme_test_line_verbatim():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert quickstart_lines()[1] in ci


def test_readme_simulate_line_runs(tmp_path):
    line = quickstart_lines()[0]
    assert "--hours 8" in line and "--out runs/demo" in line
    # Shortened night, output into the test's folder; everything else word for word.
    short = line.replace("--hours 8", "--hours 0.25").replace(
        "--out runs/demo", f"--out {tmp_path / 'demo'}"
    )
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    proc = subprocess.run(
        short, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "demo"
    for name in ("events.jsonl", "hypnogram.csv", "summary.json", "session.fif", "report.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duration_s"] == pytest.approx(900, abs=1)
    assert "stimuli" in proc.stdout and "x real time" in proc.stdout

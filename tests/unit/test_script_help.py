"""Every long-running shell script answers -h / --help with its header and does nothing else:
run from a copy of scripts/ in an empty folder, so anything the script started would show as a
file beside it (a benchmark's checkpoints/, a build's .build/, a lock's venv)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

# The executable scripts; the sourced ones (bench_settings.sh, lockenv.sh, usage.sh) run nothing.
SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.sh") if p.stat().st_mode & 0o111)


def test_every_executable_script_is_covered():
    assert "bench_rewards.sh" in SCRIPTS and "smoke.sh" in SCRIPTS
    for name in SCRIPTS:
        text = (REPO / "scripts" / name).read_text()
        assert 'usage "$@"' in text, f"{name} does not call usage before its work"


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_header_and_starts_nothing(tmp_path: Path, name: str, flag: str):
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    done = subprocess.run(
        ["bash", f"scripts/{name}", flag],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert not done.stdout.startswith("!"), "the shebang is not part of the help"
    assert "set -euo" not in done.stdout
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_help_among_other_arguments_still_starts_nothing(tmp_path: Path):
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    done = subprocess.run(
        ["bash", "scripts/bench_rewards.sh", "--only", "sft_rl_ternary", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "make bench-rewards" in done.stdout
    assert not (tmp_path / "checkpoints").exists()

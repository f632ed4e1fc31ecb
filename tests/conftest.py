"""Shared fixtures: the tiny model (built once per session, offline) and a CLI runner that runs
the real `proactive` command in a subprocess, as users and containers do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def command(args: tuple[str, ...]) -> list[str]:
    """The command line of `proactive ARGS`. A rollout or eval run that names no engine gets
    backend=transformers: backend=auto would start vLLM (~20 s each) in every stage test, and
    the vLLM engine has tests of its own (tests/vllm, the container smoke)."""
    if args and args[0] in ("rollout", "eval") and not any("backend=" in a for a in args):
        args = (*args, "--set", "backend=transformers")
    return [sys.executable, "-m", "proactive_rl.stages.cli", *args]


def proactive(*args: str, cwd: Path, check: bool = True, timeout: float = 600, env=None):
    """Run `proactive ARGS` in `cwd`; returns the CompletedProcess (stdout+stderr merged)."""
    proc = subprocess.run(
        command(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"proactive {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command(args),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from proactive_rl.engine.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def workdir(tmp_path) -> Path:
    """A working directory holding a copy of the bundled sample data, like the compose volume."""
    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    return tmp_path


@pytest.fixture()
def small_volume(tmp_path):
    """A 2 MB tmpfs at tmp_path/volume: a volume that fills up. Mounting needs root (as in our
    containers and CI); where it fails the test is skipped with mount's error."""
    folder = tmp_path / "volume"
    folder.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
    except OSError as err:
        pytest.skip(f"cannot mount a tmpfs here: {err}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(volume: Path, leave: int) -> None:
    """Fill `volume` with a ballast file until `leave` bytes are free."""
    free = shutil.disk_usage(volume).free
    with open(volume / "ballast", "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is; elsewhere they are reported as skipped, with why."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make gpu-check` / pytest -m gpu there)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

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

# The test suite's own knobs, kept from the caller's environment (every other PROACTIVE_* is a
# pipeline setting: see pytest_configure).
TEST_KNOBS = {"PROACTIVE_CRASH_SEED"}
# Settings the stages read from the environment (the pipeline's knobs: seed, trackers, recipe,
# launch id, GPUs, fault injection) and the trackers' own: a user's shell that sets them (a
# WANDB_MODE=online, a PROACTIVE_SEED) would change what the stages under test do. Tests that
# want one pass it explicitly.
FOREIGN_PREFIXES = ("PROACTIVE_", "WANDB_", "MLFLOW_")


def pytest_configure(config):
    """Every test starts from the same environment, whatever the caller's shell exports."""
    for name in list(os.environ):
        if name.startswith(FOREIGN_PREFIXES) and name not in TEST_KNOBS:
            del os.environ[name]


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


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """A base_models folder holding builtin:smollm2, converted once per session (~25 s on 2
    cores) for every test that reads it; nothing else is written there."""
    from proactive_rl.engine.models import resolve_base_model

    cache = tmp_path_factory.mktemp("base_models")
    resolve_base_model("builtin:smollm2", cache)
    return cache


@pytest.fixture(scope="session")
def smollm2(smollm2_cache) -> Path:
    """The converted SmolLM2-135M-Instruct folder (read it, do not change it)."""
    return smollm2_cache / "smollm2"


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

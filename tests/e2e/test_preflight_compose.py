"""A run that must fail, fails in its first minute (issue 21, item 5), with the real images:

- a GPU stage container that sees fewer GPUs than it was given (the CUDA image's
  PROACTIVE_FLAVOR=cuda, or PROACTIVE_GPUS) refuses at start in one line naming what it expected,
  instead of training on the CPU; on this CPU machine every container sees none;
- compose's `preflight` service (`proactive preflight` over every stage's arguments, which `prep`
  waits for) stops a bad knob before prep and SFT run: one `run --rm preflight` per bad value,
  and one whole `up pipeline` with RL_BETA=-1, whose containers are checked one by one (compose v1
  returns 0 when a service it waited for failed).

Each compose test runs in its own project (a unique name) over a temporary copy of compose.yaml,
data/ and an empty checkpoints/, removed afterwards. Needs Docker and the images built:
    .venv/bin/pytest -m docker tests/e2e/test_preflight_compose.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_compose import compose_command, read_env_file

ROOT = Path(__file__).resolve().parents[2]
PATH = f"/usr/bin:/usr/sbin:{os.environ.get('PATH', '')}"
FLAVOR = os.environ.get("FLAVOR", "cpu")
# knob, value, the stage whose config refuses it, what its message must say
BAD_KNOBS = [
    ("RL_BETA", "-1", "rollout", r"beta.*-1"),
    ("RL_BETA", "high", "rollout", r"beta.*high"),
    ("RL_ROLLOUTS", "0", "grpo", r"\bn\b.*\b0\b"),
    ("RL_ROLLOUTS", "1", "grpo", r"\bn\b.*\b1\b"),
    ("RL_EPOCHS", "0", "grpo", r"\bepochs\b.*\b0\b"),
]


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- the GPU check, in the real stage images ---------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize(
    ("stage", "env", "expected"),
    [
        # the CUDA image's own setting (a CPU image with it set: torch sees no GPU here)
        ("sft", {"PROACTIVE_FLAVOR": "cuda"}, "expected 1 GPU (PROACTIVE_FLAVOR=cuda"),
        # fewer than the container was given (a device list, as Docker and Kubernetes name them)
        ("grpo", {"PROACTIVE_GPUS": "0,1"}, "expected 2 GPUs (PROACTIVE_GPUS=0,1)"),
    ],
)
def test_a_gpu_container_without_its_gpus_refuses_in_one_line(stage, env, expected):
    """The same check runs first in rollout and eval (engine/gpus.py, tests/unit/test_gpus.py);
    two stages here keep this lane short (~12 s a container on 2 cores: torch's import)."""
    settings = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    start = time.monotonic()
    proc = subprocess.run(
        ["docker", "run", "--rm", *settings, f"proactive-rl/{stage}:{FLAVOR}"]
        + ["--data-dir", "data", "--run-dir", "checkpoints/no-gpu"],
        env={**os.environ, "PATH": PATH},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    took = time.monotonic() - start
    print(f"{stage} {env}: refused in {took:.1f} s")
    assert proc.returncode == 2, proc.stdout
    (line,) = lines_of(proc.stdout)  # one line: no traceback, no log before it
    assert line.startswith("error: ") and expected in line, line
    assert "torch sees 0" in line and "NVIDIA runtime" in line, line
    assert took < 60, "a GPU run that cannot train stops in its first minute"


# --- the preflight in compose -----------------------------------------------------------------


@dataclass
class Project:
    """A compose project over a temporary copy: compose.yaml, data/ (no processed data), and an
    empty checkpoints/, owned by the containers' user."""

    name: str
    folder: Path
    command: list[str]
    env: dict[str, str]

    def compose(self, *args: str, knobs: dict[str, str] | None = None, timeout: float = 300):
        return subprocess.run(
            [*self.command, "-p", self.name, "-f", str(self.folder / "compose.yaml"), *args],
            cwd=self.folder,
            env={**self.env, **(knobs or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    def containers(self, service: str) -> list[dict[str, str]]:
        """The service's containers (all states): status, exit code, start and finish times."""
        ids = self.compose("ps", "-a", "-q", service).stdout.split()
        states = []
        for cid in ids:
            fields = (
                "{{.State.Status}}|{{.State.ExitCode}}|{{.State.StartedAt}}|{{.State.FinishedAt}}"
            )
            out = subprocess.run(
                ["docker", "inspect", "-f", fields, cid],
                env=self.env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            status, code, started, finished = out.split("|")
            states.append(
                {"status": status, "code": code, "started": started, "finished": finished}
            )
        return states

    def produced(self) -> list[str]:
        """What the stages wrote: anything under checkpoints/, data/processed."""
        found = [p for p in (self.folder / "checkpoints").rglob("*")]
        found += [p for p in (self.folder / "data").rglob("*") if "processed" in p.parts]
        return sorted(str(p.relative_to(self.folder)) for p in found)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "compose.yaml", folder / "compose.yaml")
    shutil.copytree(ROOT / "data", folder / "data", ignore=shutil.ignore_patterns("processed"))
    (folder / "checkpoints").mkdir()
    # The images run as a non-root user: root (CI) hands the folders to 1000, as smoke.sh does.
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() else (1000, 1000)
    for path in [folder / "data", folder / "checkpoints", *(folder / "data").rglob("*")]:
        os.chown(path, uid, gid)
    knobs = read_env_file(ROOT / ".env.example")  # the caller's knobs out: a known input
    env = {key: value for key, value in os.environ.items() if key not in knobs}
    env |= {"PATH": PATH, "FLAVOR": FLAVOR, "PROACTIVE_UID": str(uid), "PROACTIVE_GID": str(gid)}
    env.pop("COMPOSE_FILE", None)
    env.pop("COMPOSE_PROJECT_NAME", None)
    name = f"prl-preflight-{uuid.uuid4().hex[:8]}"
    project = Project(name, folder, command, env)
    try:
        yield project
    finally:
        project.compose("down", "--remove-orphans", "--volumes", "--timeout", "5")


@pytest.mark.docker
def test_the_preflight_passes_the_default_knobs(project):
    """The control: with the compose defaults (and nothing prepared yet) it lets the chain go."""
    proc = project.compose("run", "--rm", "-T", "preflight")
    assert proc.returncode == 0, proc.stdout
    assert "error:" not in proc.stdout
    assert project.produced() == [], "the preflight writes nothing"


@pytest.mark.docker
@pytest.mark.parametrize(("knob", "value", "stage", "says"), BAD_KNOBS)
def test_the_preflight_refuses_a_bad_knob(project, knob, value, stage, says):
    proc = project.compose("run", "--rm", "-T", "preflight", knobs={knob: value})
    assert proc.returncode == 2, proc.stdout
    assert "Traceback" not in proc.stdout, proc.stdout
    lines = lines_of(proc.stdout)
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, proc.stdout  # one problem, one `error: <stage>: ` line
    assert lines[errors[0]].startswith(f"error: {stage}: "), proc.stdout
    # the problem: on that line, or on the indented lines of a config error after it
    # ("error: grpo: invalid GrpoConfig:" / "  n: Input should be greater than ... (got 0)")
    problem = [lines[errors[0]], *(line for line in lines[errors[0] + 1 :] if line[:1] == " ")]
    assert re.search(says, "\n".join(problem)), proc.stdout
    assert project.produced() == [], "the preflight writes nothing"


@pytest.mark.docker
def test_up_pipeline_with_a_bad_beta_stops_before_prep(project):
    """`RL_BETA=-1 compose up pipeline`: the preflight fails in its first minute, prep and sft
    never run, nothing is written, and the failure shows in the containers' exit codes (compose
    v1's own exit code is not relied on: it is 1 here, but 0 when the last service fails)."""
    start = time.monotonic()
    proc = project.compose("up", "--no-color", "pipeline", knobs={"RL_BETA": "-1"}, timeout=600)
    took = time.monotonic() - start
    print(f"compose up pipeline, RL_BETA=-1: returned {proc.returncode} after {took:.1f} s")
    (preflight,) = project.containers("preflight")
    assert (preflight["status"], preflight["code"]) == ("exited", "2"), proc.stdout
    # compose prints only "ERROR: for prep  Container ... exited with code 2" (v1; v2 names the
    # service): the message is in the preflight's log, where `compose logs preflight` shows it
    assert "exited with code 2" in proc.stdout or "didn't complete successfully" in proc.stdout
    log = project.compose("logs", "--no-color", "preflight").stdout
    assert re.search(r"error: rollout: .*beta.*-1", log), log
    for service in ("prep", "sft", "rollout", "rollout-1", "grpo", "eval", "pipeline"):
        for container in project.containers(service):  # created at most, never started
            assert container["started"].startswith("0001-01-01"), (service, container)
    assert project.produced() == [], "prep and sft did not run"
    # the preflight itself: seconds, not the hours prep + SFT take on the 8B recipe
    assert seconds_between(preflight["started"], preflight["finished"]) < 60
    assert took < 120, f"compose up pipeline took {took:.0f} s to stop"


def seconds_between(started: str, finished: str) -> float:
    """Docker's RFC 3339 times (nanoseconds, Z) -> seconds from one to the other."""

    def parse(stamp: str) -> float:
        from datetime import datetime

        whole, _, fraction = stamp.rstrip("Z").partition(".")
        base = datetime.fromisoformat(whole + "+00:00").timestamp()
        return base + float(f"0.{fraction or 0}")

    return parse(finished) - parse(started)

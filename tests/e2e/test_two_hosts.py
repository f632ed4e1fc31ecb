"""Two hosts rehearsed in CI (issue 21 items 6 and 7): the JobSet's grpo container on two Docker
containers of one network (torchrun --nnodes=2 over gloo, DeepSpeed ZeRO-2 across them) beside its
rollout worker, each container rendered from deploy/k8s_gen.py and started as the kubelet would
(scripts/rehearsal_pods.py), after the JobSet's preflight, prep and sft. docs/multinode.md says
what runs and what it does not prove. Needs Docker and the images (CI's container phase):

    .venv/bin/pytest -m docker tests/e2e/test_two_hosts.py -s     # -s: the figures at the end
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.docker

SCRIPT = REPO / "scripts" / "rehearse_two_hosts.py"
# A killed peer is noticed after peer_quiet_timeout, counted from the last heartbeat seen
# (heartbeats every 10 s, polls every few seconds); the container then takes a moment to exit.
NOTICE_SLACK_S = 20


def load_rehearsal():
    spec = importlib.util.spec_from_file_location("rehearse_two_hosts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


rh = load_rehearsal()


def docker_ready() -> str | None:
    """Why the rehearsal cannot run here, or None."""
    if shutil.which(rh.DOCKER) is None:
        return "docker is not installed"
    try:
        rh.docker("image", "inspect", "proactive-rl/grpo:cpu", "proactive-rl/rollout:cpu")
    except rh.RehearsalError as err:
        return f"no images (scripts/build-images.sh): {err}"
    return None


@pytest.fixture(scope="module")
def rehearsal():
    why = docker_ready()
    if why:
        pytest.skip(why)
    with rh.host() as h:
        r = rh.Rehearsal(h)
        r.prepare()
        yield r
        print("\nrehearsal figures:", json.dumps(r.figures, indent=2, default=str))


@pytest.fixture(scope="module")
def reference(rehearsal) -> Path:
    """The uninterrupted run on two trainer containers, every other run's reference."""
    return rehearsal.uninterrupted("two", nodes=2)


def test_two_trainer_containers_train_one_zero_group(rehearsal, reference):
    """Both trainer containers are ranks of one ZeRO-2 world of two (one process each), every
    step is trained and published once, and the weights moved."""
    trainers = [f"{rehearsal.host.prefix}-two-grpo-{i}" for i in (0, 1)]
    for name in trainers:
        assert "training: zero2 x2 on cpu" in rh.logs(name, 5000), name
    assert rh.versions(reference) == list(range(rh.STEPS + 1))
    assert [r["step"] for r in rh.step_lines(reference)] == list(range(rh.STEPS))
    first = rh.tensors(reference / "policies" / "step_000000" / "model.safetensors")
    last = rh.tensors(reference / "policies" / f"step_{rh.STEPS:06d}" / "model.safetensors")
    assert any(first[k][2] != last[k][2] for k in first), "training changed no weight"
    figures = rehearsal.figures["two"]
    assert figures["rendezvous_s"] > 0 and len(figures["update_s"]) == rh.STEPS


def test_a_killed_trainer_then_a_restarted_launch_ends_as_the_uninterrupted_run(
    rehearsal, reference
):
    """Trainer 0 (torchrun's store, the only writer) is `docker kill`ed once policy 1 is out;
    every container is stopped and started again with the same launch id, as a JobSet restart
    does: the run ends at the same step, with the same metrics and bit-identical weights."""
    run = rehearsal.killed_and_restarted("killed", victim=0)
    assert rh.versions(run) == list(range(rh.STEPS + 1))
    assert [r["step"] for r in rh.step_lines(run)] == list(range(rh.STEPS))
    assert rh.differences(run, reference) == []


def test_a_trainer_clock_ten_minutes_ahead(rehearsal, reference):
    """Trainer 0's wall clock 10 minutes ahead: its live rollout peer is not taken for dead
    (the run gets past policy 2), the rollout worker's SIGKILL (its own, before the last step's
    rollouts: a timed `docker kill` raced that step) is noticed by that trainer within
    peer_quiet_timeout, and the restarted launch runs to the uninterrupted end."""
    result = rehearsal.clock_offset("clock", offset="+10m")
    faked = result["trainers"][0]
    log = result["logs"][faked]
    assert result["exit_codes"][faked] not in (None, 0), log
    assert "went quiet" in log, log
    assert result["noticed_s"][faked] <= rh.QUIET_S + NOTICE_SLACK_S, result["noticed_s"]
    assert rh.differences(result["run_dir"], reference) == []

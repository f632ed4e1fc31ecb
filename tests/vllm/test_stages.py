"""The rollout and eval stages with backend=vllm, as real processes on the tiny model: the
rollout worker starts one engine and reloads every policy version the trainer publishes into it;
eval serves every checkpoint from one engine; neither leaves an engine process behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid

import psutil
import pytest

from proactive_rl.shared.paths import numbered_children
from tests.conftest import REPO, proactive
from tests.stages.test_rl_loop import LOGPROB_DIFF, run_rl

pytestmark = pytest.mark.vllm


# Every process the stages start carries this variable (inherited, as the engine's processes
# inherit it): what is left behind is found by it, not by name among every process on the
# machine, where another user's vLLM would count too.
TAG = "PROACTIVE_TEST_STAGES"


def left_behind(tag: str, within: float = 120.0) -> set[int]:
    """Pids of live processes started under `tag`, once they have had `within` seconds to end
    (on a loaded machine an engine's last process can take a while; returns as soon as none
    is left)."""
    deadline = time.monotonic() + within
    while True:
        found = set()
        for proc in psutil.process_iter():
            try:
                if proc.pid != os.getpid() and proc.environ().get(TAG) == tag:
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        found.add(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("rl_vllm")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    tag = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TAG, tag)  # the stages' processes inherit our environment
        paths = run_rl(workdir, tiny_model, max_staleness=0, rollout_args=("--set", "backend=vllm"))
    return workdir, paths, tag


def test_rollout_reloads_each_policy_version_into_one_engine(vllm_run):
    _, paths, tag = vllm_run
    log = (paths.root / "rollout.log").read_text()
    assert "generation backend: VllmBackend" in log
    assert len(re.findall(r"vLLM engine started", log)) == 1
    reloads = re.findall(r"vLLM reloaded \S+/policies/step_(\d+) in place", log)
    assert reloads == ["000001", "000002"]  # versions 1 and 2 feed steps 1 and 2
    assert len(numbered_children(paths.rollouts)) == 3
    lines = [json.loads(x) for x in (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()]
    for m in lines:
        # vLLM's logprobs are the trainer's for the same weights, step after step (within
        # bf16's rounding where grpo trains in bf16: LOGPROB_DIFF)
        assert m["rollout/sampler_logprob_abs_diff"] < LOGPROB_DIFF, m
    assert not left_behind(tag), "the RL workers left processes running"


def test_eval_serves_every_checkpoint_from_one_engine(vllm_run):
    workdir, paths, _ = vllm_run
    tag = uuid.uuid4().hex
    proc = proactive(
        "eval",
        "--run-dir",
        str(paths.root),
        "--set",
        "backend=vllm",
        "--set",
        "checkpoints=base,policy:1,final",
        "--set",
        "n=2",
        "--set",
        "sampling.max_new_tokens=8",
        cwd=workdir,
        env={TAG: tag},
    )
    log = proc.stdout + proc.stderr
    assert len(re.findall(r"vLLM engine started", log)) == 1
    assert len(re.findall(r"vLLM reloaded .* in place", log)) == 2
    report = json.loads(next(paths.eval.glob("*/report.json")).read_text())
    assert [c["label"] for c in report["checkpoints"]] == ["base", "policy_1", "policy_3"]
    assert all(c["metrics"]["samples"] == 6 for c in report["checkpoints"])
    assert not left_behind(tag), "eval left processes running"

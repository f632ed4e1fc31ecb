"""The rollout and eval stages with backend=vllm, as real processes on the tiny model: the
rollout worker starts one engine and reloads every policy version the trainer publishes into it;
eval serves every checkpoint from one engine; neither leaves an engine process behind."""

from __future__ import annotations

import json
import re
import shutil

import psutil
import pytest

from proactive_rl.shared.paths import numbered_children
from tests.conftest import REPO, proactive
from tests.stages.test_rl_loop import run_rl

pytestmark = pytest.mark.vllm


def engine_processes() -> set[int]:
    """Live vLLM engine processes on this machine (vLLM names them VLLM::EngineCore etc.)."""
    found = set()
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        title = " ".join([proc.info["name"] or "", *(proc.info["cmdline"] or [])])
        if "VLLM::" in title and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.add(proc.pid)
    return found


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("rl_vllm")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    before = engine_processes()
    paths = run_rl(workdir, tiny_model, max_staleness=0, rollout_args=("--set", "backend=vllm"))
    return workdir, paths, before


def test_rollout_reloads_each_policy_version_into_one_engine(vllm_run):
    _, paths, before = vllm_run
    log = (paths.root / "rollout.log").read_text()
    assert "generation backend: VllmBackend" in log
    assert len(re.findall(r"vLLM engine started", log)) == 1
    reloads = re.findall(r"vLLM reloaded \S+/policies/step_(\d+) in place", log)
    assert reloads == ["000001", "000002"]  # versions 1 and 2 feed steps 1 and 2
    assert len(numbered_children(paths.rollouts)) == 3
    lines = [json.loads(x) for x in (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()]
    for m in lines:
        # vLLM's logprobs are the trainer's for the same weights, step after step
        assert m["rollout/sampler_logprob_abs_diff"] < 1e-4, m
    assert engine_processes() <= before


def test_eval_serves_every_checkpoint_from_one_engine(vllm_run):
    workdir, paths, before = vllm_run
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
    )
    log = proc.stdout + proc.stderr
    assert len(re.findall(r"vLLM engine started", log)) == 1
    assert len(re.findall(r"vLLM reloaded .* in place", log)) == 2
    report = json.loads(next(paths.eval.glob("*/report.json")).read_text())
    assert [c["label"] for c in report["checkpoints"]] == ["base", "policy_1", "policy_3"]
    assert all(c["metrics"]["samples"] == 6 for c in report["checkpoints"])
    assert engine_processes() <= before

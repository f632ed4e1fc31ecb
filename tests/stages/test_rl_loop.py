"""The rollout and GRPO workers run side by side as real processes on the tiny model and
exchange rollouts and policies through the run directory; then eval reads the final policy."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoModelForCausalLM

from proactive_rl.engine.precision import training_dtype
from proactive_rl.shared.paths import RunPaths, numbered_children
from proactive_rl.shared.publish import is_stable, read_marker, verify
from proactive_rl.shared.schemas import ROLLOUTS, read_table
from tests.conftest import REPO, proactive, start
from tests.tracker_records import mlflow_runs, numbers_by_step, wandb_runs

N = 4
PROMPTS = 3
# Mean |sampler - trainer| logprob per token on the same weights. grpo trains in the dtype
# precision=auto picks (bf16 autocast on a CPU with AMX, engine/precision.py) while the sampler
# runs float32 on a CPU: bf16's rounding then dominates (6.3e-4 measured on the tiny model).
LOGPROB_DIFF = 1e-4 if training_dtype("auto") == torch.float32 else 5e-3

# A user reward file with the users' signature: longer responses score higher, so even the
# untrained tiny model gets non-zero advantages and the update must move the weights.
USER_REWARD = """
def length_reward(prompt_str, responses, ground_truths, data_sources, extra_infos, scale=1.0):
    return [{"score": scale * len(r) / 100.0, "chars": len(r)} for r in responses]
"""


def run_rl(
    workdir,
    tiny_model,
    max_staleness: int,
    grpo_args: tuple[str, ...] = (),
    rollout_args: tuple[str, ...] = (),
) -> RunPaths:
    """prep, then grpo and rollout side by side to the end; their output in grpo.log and
    rollout.log in the run directory."""
    proactive("prep", "--set", "max_rl_rows=12", "--set", "test_fraction=0.25", cwd=workdir)
    (workdir / "reward.py").write_text(USER_REWARD)
    run_dir = workdir / "checkpoints" / "run"
    common = ["--run-dir", str(run_dir)]
    grpo = start(
        "grpo",
        *common,
        "--set",
        f"init_model={tiny_model}",
        "--set",
        "epochs=1",
        "--set",
        f"prompts_per_step={PROMPTS}",
        "--set",
        f"n={N}",
        "--set",
        "learning_rate=1e-3",
        "--set",
        "min_lr_ratio=0.1",
        "--set",
        f"max_staleness={max_staleness}",
        "--set",
        "micro_batch_size=5",
        *grpo_args,
        cwd=workdir,
    )
    rollout = start(
        "rollout",
        *common,
        "--set",
        "reward=reward.py:length_reward",
        "--set",
        'reward_kwargs={"scale": 2.0}',
        "--set",
        "sampling.max_new_tokens=12",
        "--set",
        "num_examine=1",
        *rollout_args,
        cwd=workdir,
    )
    # both pipes drained at once: a worker blocked on a full pipe would stall the other
    with ThreadPoolExecutor(2) as pool:
        out_g, out_r = pool.map(lambda p: p.communicate(timeout=600)[0], (grpo, rollout))
    assert grpo.returncode == 0, out_g
    assert rollout.returncode == 0, out_r
    (run_dir / "grpo.log").write_text(out_g)
    (run_dir / "rollout.log").write_text(out_r)
    return RunPaths(run_dir)


# veRL's key, as the users' launch scripts pass it: every tracker, offline
TRACKERS = ("--set", "trainer.logger=['console','tensorboard','wandb','mlflow']")


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory, tiny_model):

    workdir = tmp_path_factory.mktemp("rl")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    paths = run_rl(workdir, tiny_model, 0, grpo_args=TRACKERS, rollout_args=TRACKERS)
    return workdir, paths


def test_every_step_publishes_whole_groups_and_a_policy(rl_run):
    _, paths = rl_run
    steps = 9 // PROMPTS  # 12 rows, 25% test -> 9 train rows
    rollouts = numbered_children(paths.rollouts)
    policies = numbered_children(paths.policies)
    assert [s for s, _ in rollouts] == list(range(steps))
    assert [v for v, _ in policies] == list(range(steps + 1))
    plan_id = json.loads(paths.plan.read_text())["plan_id"]
    for step, folder in rollouts:
        verify(folder)
        marker = read_marker(folder)
        assert marker["plan_id"] == plan_id and marker["policy_version"] == step  # on-policy
        rows = read_table(paths.rollout_file(step), ROLLOUTS).to_pylist()
        assert len(rows) == PROMPTS * N == marker["rows"]
        groups = {}
        for row in rows:
            groups.setdefault(row["group_id"], []).append(row["sample_index"])
            assert len(row["sampling_logprobs"]) == len(row["response_ids"]) > 0
            assert row["reward"] == pytest.approx(2.0 * len(row["response_text"]) / 100)
            assert dict(row["reward_parts"])["chars"] == len(row["response_text"])
        assert all(sorted(v) == list(range(N)) for v in groups.values())
    for _, folder in policies:
        verify(folder)


def test_grpo_changes_the_weights_and_logs_metrics(rl_run):
    _, paths = rl_run
    last = numbered_children(paths.policies)[-1][1]
    first = AutoModelForCausalLM.from_pretrained(paths.policy(0))
    final = AutoModelForCausalLM.from_pretrained(last)
    pairs = zip(first.named_parameters(), final.named_parameters(), strict=True)
    changed = [name for (name, a), (_, b) in pairs if not torch.equal(a, b)]
    assert len(changed) == len(list(first.parameters()))
    lines = [json.loads(x) for x in (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2]
    for m in lines:
        assert m["opt/grad_norm"] > 0 and m["reward/mean"] > 0
        # the transformers sampler and the trainer agree on the logprobs of the same weights
        assert m["rollout/sampler_logprob_abs_diff"] < LOGPROB_DIFF
    assert list(paths.logs("grpo").glob("events.out.tfevents*"))


def test_rerun_is_refused_and_resume_after_the_end_does_nothing(rl_run, tiny_model):
    workdir, paths = rl_run
    # the run's own starting model: the reused run directory is the only thing wrong
    run_again = ["--run-dir", str(paths.root), "--set", f"init_model={tiny_model}"]
    proc = proactive("grpo", *run_again, cwd=workdir, check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--clean" in proc.stderr
    assert "Traceback" not in proc.stderr
    before = sorted(p.name for p in paths.policies.iterdir())
    proactive(
        "grpo",
        "--run-dir",
        str(paths.root),
        "--resume",
        "--set",
        "init_model=sft",
        cwd=workdir,
        check=False,
    )
    assert sorted(p.name for p in paths.policies.iterdir()) == before


def test_eval_reports_on_the_final_policy(rl_run):
    workdir, paths = rl_run
    proactive(
        "eval",
        "--run-dir",
        str(paths.root),
        "--set",
        "n=2",
        "--set",
        "sampling.max_new_tokens=8",
        cwd=workdir,
    )
    reports = list(paths.eval.glob("*/report.json"))
    assert len(reports) == 1 and is_stable(reports[0].parent)
    report = json.loads(reports[0].read_text())
    assert report["questions"] == 3
    # the default compares the base model (RL started from it: no SFT in this run) and the final
    # policy, and skips the missing SFT
    assert [c["label"] for c in report["checkpoints"]] == ["base", "policy_3"]
    final = report["checkpoints"][-1]
    assert final["path"].endswith("step_000003") and final["metrics"]["samples"] == 6
    for key in ("accuracy", "proactive_rate", "think_rate", "hallucination_rate", "f_score"):
        assert 0.0 <= final["metrics"][key] <= 1.0
    assert report["training"]["curve"]["steps"] == [0, 1, 2]


@pytest.mark.parametrize("background", ["never", "always"])
def test_one_step_off_policy(tmp_path, tiny_model, workdir, background):
    """One step off, each policy written by the trainer itself or in a background thread while
    the next step trains (what `auto` does on a GPU): the same run either way."""
    setting = ("--set", f"publish_in_background={background}")
    paths = run_rl(workdir, tiny_model, max_staleness=1, grpo_args=setting)
    versions = [read_marker(f)["policy_version"] for _, f in numbered_children(paths.rollouts)]
    # step k may use any policy >= k - 1, and never a newer one than exists
    assert all(k - 1 <= v <= k for k, v in enumerate(versions))
    assert [v for v, _ in numbered_children(paths.policies)] == [0, 1, 2, 3]
    for _, folder in numbered_children(paths.policies):
        verify(folder)
    log = (paths.root / "grpo.log").read_text()
    assert ("written in a background thread" in log) == (background == "always")
    lines = [json.loads(x) for x in (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2]  # each once its policy is published
    for m in lines:
        assert m["time/publish_s"] > 0 and m["time/save_state_s"] > 0  # state_every_steps=1
        # what held the trainer up includes the state it saved; the write itself only when
        # the trainer wrote the policy
        assert m["time/publish_wait_s"] >= m["time/save_state_s"]
        if background == "never":
            assert m["time/publish_wait_s"] >= m["time/save_state_s"] + m["time/publish_s"]


@pytest.mark.slow
def test_ddp_strategy_relaunches_under_torchrun_and_one_process_writes(
    tmp_path, tiny_model, workdir
):
    """strategy=ddp: `proactive grpo` re-executes itself under torchrun with 2 processes (gloo
    on the CPU); the loop runs as with one process and only rank 0 writes to the volume."""
    grpo_args = ("--set", "strategy=ddp", "--set", "num_processes=2")
    paths = run_rl(workdir, tiny_model, max_staleness=0, grpo_args=grpo_args)
    log = (paths.root / "grpo.log").read_text()
    assert "training: ddp x2" in log
    assert [v for v, _ in numbered_children(paths.policies)] == [0, 1, 2, 3]
    for _, folder in numbered_children(paths.policies):
        verify(folder)
    lines = (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2]  # one writer, no duplicates
    first = AutoModelForCausalLM.from_pretrained(paths.policy(0))
    final = AutoModelForCausalLM.from_pretrained(paths.policy(3))
    assert not all(
        torch.equal(a, b) for a, b in zip(first.parameters(), final.parameters(), strict=True)
    )
    for line in lines:
        assert json.loads(line)["rollout/sampler_logprob_abs_diff"] < LOGPROB_DIFF


def test_trackers_of_grpo_rollout_and_eval_hold_what_metrics_jsonl_holds(rl_run):
    """trainer.logger=[...,'wandb','mlflow'] on grpo + rollout + eval: an offline W&B run
    and an MLflow run per stage, in the run's group / experiment, whose numbers are
    metrics.jsonl's, with the resolved config and, for eval, the report."""
    workdir, paths = rl_run
    eval_args = ("--set", "n=2", "--set", "sampling.max_new_tokens=8", "--set", "name=tracked")
    proactive("eval", "--run-dir", str(paths.root), *eval_args, *TRACKERS, cwd=workdir)
    wandb = {r.job_type: r for r in wandb_runs(paths.root)}
    mlflow = mlflow_runs(paths.root, "run")
    assert set(wandb) == set(mlflow) == {"grpo", "rollout", "eval"}
    for stage in ("grpo", "rollout", "eval"):
        expected = numbers_by_step(paths.logs(stage) / "metrics.jsonl")
        assert expected and all(expected.values())
        run = wandb[stage]
        assert run.group == "run" and "wandb" in run.config["tracking"]["logger"]
        logged = {
            step: {k: float(v) for k, v in items.items() if k in expected.get(step, {})}
            for step, items in run.history.items()
        }
        assert {s: v for s, v in logged.items() if v} == expected
        mlrun, histories, artifacts, _ = mlflow[stage]
        assert "'mlflow'" in mlrun.data.params["tracking.logger"]
        for step, numbers in expected.items():
            for key, value in numbers.items():
                assert histories[key][step] == pytest.approx(value, rel=1e-12), (stage, key)
        assert "config.json" in artifacts
    assert "report" in mlflow["eval"][2] and "report.md" in wandb["eval"].files
    # the rollout's own numbers: its mean reward is the one its step marker records
    rollout_lines = numbers_by_step(paths.logs("rollout") / "metrics.jsonl")
    for step, numbers in rollout_lines.items():
        marker = read_marker(paths.rollout_file(step).parent)
        assert numbers["rollout/reward_mean"] == pytest.approx(marker["reward_mean"])

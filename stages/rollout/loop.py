"""The rollout worker's loop over one plan: for each step wait for a policy recent enough, load
it when it is new, sample the step (sampling.py) and publish this worker's share. It gives the
plan up as soon as grpo replaces it (grpo --clean). Imported from `run()` only."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from proactive_rl.engine.generation import Backend
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.faults import crash_point
from proactive_rl.shared.metrics import MetricsLogger
from proactive_rl.shared.paths import (
    ROLLOUTS_FILE,
    DataPaths,
    RunPaths,
    numbered_children,
    rollout_worker_name,
)
from proactive_rl.shared.peers import PeerWatch, wait_for
from proactive_rl.shared.publish import (
    is_stable,
    read_marker,
    staged,
    verified_model,
    verified_processed,
)
from proactive_rl.shared.rewards import RewardFn
from proactive_rl.shared.schedule import Plan, read_plan
from proactive_rl.shared.schemas import RL_DATA, ROLLOUTS, RolloutRow, read_table, write_table
from proactive_rl.shared.trackers import open_metrics
from proactive_rl.stages.rollout.config import RolloutConfig
from proactive_rl.stages.rollout.sampling import (
    LoadedPolicy,
    StepContext,
    StepRollouts,
    TrainRecord,
    generate_step,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

POLICY_DAMAGED = "Check the volume for errors, then start both workers over with --clean"


@dataclass(frozen=True)
class Worker:
    """What a rollout worker keeps for its whole run, across plans."""

    config: RolloutConfig
    paths: RunPaths
    data_dir: Path
    started: PeerWatch  # the status files as at our start: grpo is judged by change since
    reward_fn: RewardFn
    backend: Backend  # one engine for the whole run: a new plan reuses it too


@dataclass(frozen=True)
class Policy:
    """A published policy of the current plan."""

    version: int
    folder: Path


@dataclass(frozen=True)
class Replanned:
    """The plan was replaced while we waited (grpo started over): give this one up."""


@dataclass(frozen=True)
class StepTimes:
    wait: float  # for the policy the step needs
    load: float  # reading a new policy into the engine (0 when the version was loaded)
    generate: float


def follow_plan(worker: Worker) -> bool:
    """Run the current plan to its end (True) or return False as soon as it is replaced."""
    config, paths = worker.config, worker.paths
    plan = wait_plan(worker)
    check_worker(config, paths, plan)  # again: the plan may be new since start-up
    train = read_train(worker.data_dir, plan)
    first = first_step(worker, plan)
    log_plan(plan, config.worker, first)
    ctx = StepContext(config, plan, train, worker.backend, worker.reward_fn)
    metrics = open_step_metrics(worker, first)
    try:
        return run_steps(worker, plan, ctx, first, metrics)
    finally:
        metrics.close()


def open_step_metrics(worker: Worker, first: int) -> MetricsLogger:
    """This worker's metrics log from step `first` on: lines of later steps (logged before a
    kill, or by a plan given up) go, so each step keeps one line; the trackers' runs are
    continued when the worker resumes mid-plan, new when it starts a plan."""
    config = worker.config
    return open_metrics(
        config.tracking,
        worker.paths,
        rollout_worker_name(config.worker),
        config,
        resume_at=first,
        resume_trackers=first > 0,
    )


def run_steps(
    worker: Worker, plan: Plan, ctx: StepContext, first: int, metrics: MetricsLogger
) -> bool:
    """Sample and publish the plan's steps from `first` on; False once the plan is replaced."""
    paths = worker.paths
    policy: LoadedPolicy | None = None
    for step in range(first, plan.total_steps):
        t_wait = time.perf_counter()
        found = wait_policy(worker, plan, step)
        if isinstance(found, Replanned):
            return False
        wait_s = time.perf_counter() - t_wait
        load_s = 0.0
        if policy is None or policy.version != found.version:
            t_load = time.perf_counter()
            policy = load_policy(worker.backend, found)
            load_s = time.perf_counter() - t_load
        t_gen = time.perf_counter()
        rollouts = generate_step(ctx, step, policy)
        gen_s = time.perf_counter() - t_gen
        if plan_changed(paths, plan):
            return False
        times = StepTimes(wait_s, load_s, gen_s)
        crash_point("rollout", "before_publish", step)
        publish_step(worker, plan, step, policy.version, rollouts, times)
        metrics.log(step, step_metrics(rollouts.rows, step, policy.version, times))
    return True


def step_metrics(
    rows: list[RolloutRow], step: int, version: int, seconds: StepTimes
) -> dict[str, float]:
    """What a researcher plots of a rollout step: reward, answers and hedges, lengths, times."""
    count = len(rows)
    tokens = sum(len(r["response_ids"]) for r in rows)
    parts = [r["reward_parts"] or {} for r in rows]
    out = {
        "rollout/reward_mean": sum(r["reward"] for r in rows) / count,
        "rollout/responses": float(count),
        "rollout/response_tokens_mean": tokens / count,
        "rollout/truncated_fraction": sum(r["finish_reason"] == "length" for r in rows) / count,
        "rollout/policy_lag": float(step - version),
        "time/wait_s": seconds.wait,
        "time/load_s": seconds.load,
        "time/generate_s": seconds.generate,
        "perf/generated_tokens_per_s": tokens / seconds.generate if seconds.generate else 0.0,
    }
    for key in sorted({k for p in parts for k in p}):
        values = [p[key] for p in parts if key in p]
        out[f"rollout/{key}_mean"] = sum(values) / len(values)
    return out


def check_worker(config: RolloutConfig, paths: RunPaths, plan: Plan) -> None:
    if config.worker >= plan.rollout_workers:
        raise UserError(
            f"worker={config.worker}, but the plan {paths.plan} has rollout_workers="
            f"{plan.rollout_workers} (workers 0..{plan.rollout_workers - 1}): give each rollout "
            "process its own worker below rollout_workers, or start grpo with more "
            "rollout_workers (in compose: ROLLOUT_WORKERS)"
        )


def wait_for_grpo(worker: Worker, check: Callable[[], T | None], what: str) -> T:
    """check()'s first value that is not None, waiting on grpo under the worker's timeouts (a
    grpo that failed, went quiet or never started ends the wait with its reason)."""
    return wait_for(
        check,
        what,
        timeout=worker.config.wait_timeout,
        peer="grpo",
        peer_status=worker.paths.status("grpo"),
        watch=worker.started,
        quiet_after=worker.config.peer_quiet_timeout,
        start_after=worker.config.peer_start_timeout,
    )


def wait_plan(worker: Worker) -> Plan:
    paths = worker.paths
    return wait_for_grpo(
        worker,
        lambda: read_plan(paths.plan) if paths.plan.is_file() else None,
        f"the RL plan {paths.plan}",
    )


def read_train(data_dir: Path, plan: Plan) -> list[TrainRecord]:
    """rl_train.parquet, verified, and the same size as the data the plan was made for."""
    train_file = DataPaths(data_dir).rl_train
    verified_processed(DataPaths(data_dir))
    train = read_table(train_file, RL_DATA).to_pylist()
    if len(train) != plan.train_rows:
        raise UserError(
            f"{train_file} has {len(train)} rows but the plan was made for {plan.train_rows}: "
            "rerun prep and grpo so both use the same data"
        )
    return train


def first_step(worker: Worker, plan: Plan) -> int:
    """The step after the last one this worker published under this plan (--resume)."""
    home = worker.paths.rollout_home(worker.config.worker, plan.rollout_workers)
    done = [
        step
        for step, folder in numbered_children(home)
        if is_stable(folder) and read_marker(folder).get("plan_id") == plan.plan_id
    ]
    return max(done) + 1 if done else 0


def log_plan(plan: Plan, worker: int, first: int) -> None:
    logger.info(
        "plan %s: %d steps x %d prompts x n=%d; worker %d of %d; starting at step %d",
        plan.plan_id,
        plan.total_steps,
        plan.batch,
        plan.n,
        worker,
        plan.rollout_workers,
        first,
    )


def plan_changed(paths: RunPaths, plan: Plan) -> bool:
    return paths.plan.is_file() and read_plan(paths.plan).plan_id != plan.plan_id


def latest_policy(paths: RunPaths, plan_id: str) -> Policy | None:
    for version, folder in reversed(numbered_children(paths.policies)):
        if is_stable(folder) and read_marker(folder).get("plan_id") == plan_id:
            return Policy(version, folder)
    return None


def wait_policy(worker: Worker, plan: Plan, step: int) -> Policy | Replanned:
    """The newest policy of the plan recent enough for `step`, or Replanned as soon as the plan
    is replaced."""
    paths = worker.paths
    need = plan.min_policy_version(step)

    def check() -> Policy | Replanned | None:
        if plan_changed(paths, plan):
            return Replanned()
        policy = latest_policy(paths, plan.plan_id)
        return policy if policy and policy.version >= need else None

    return wait_for_grpo(
        worker, check, f"policy version >= {need} in {paths.policies} (for rollout step {step})"
    )


def load_policy(backend: Backend, policy: Policy) -> LoadedPolicy:
    """Verify a new policy version (once a version, before the engine reads it) and load it
    into the engine, with its tokenizer."""
    from transformers import AutoTokenizer

    verified_model(policy.folder, POLICY_DAMAGED)
    backend.load(policy.folder)
    tokenizer = AutoTokenizer.from_pretrained(policy.folder)
    return LoadedPolicy(policy.version, tokenizer)


def publish_step(
    worker: Worker,
    plan: Plan,
    step: int,
    version: int,
    rollouts: StepRollouts,
    seconds: StepTimes,
) -> None:
    """Publish this worker's share of the step, with its marker, and log it."""
    config, rows = worker.config, rollouts.rows
    workers = plan.rollout_workers
    reward_mean = sum(r["reward"] for r in rows) / len(rows)
    meta = step_meta(worker, plan, step, version, reward_mean, seconds, rollouts.dropped)
    with staged(worker.paths.rollout_part(step, config.worker, workers), meta) as staging:
        count = write_table(rows, ROLLOUTS, staging / ROLLOUTS_FILE)
        meta.update(rows=count, groups=count // plan.n)
    logger.info(
        "step %d/%d: published %d responses%s from policy %d, mean reward %.3f "
        "(waited %.1fs, generated %.1fs)",
        step + 1,
        plan.total_steps,
        count,
        f" (part {config.worker} of {workers})" if workers > 1 else "",
        version,
        reward_mean,
        seconds.wait,
        seconds.generate,
    )


def step_meta(
    worker: Worker,
    plan: Plan,
    step: int,
    version: int,
    reward_mean: float,
    seconds: StepTimes,
    dropped: list[int],
) -> dict[str, Any]:
    """The step's marker (rows and groups are added once the file is written)."""
    config = worker.config
    return {
        "plan_id": plan.plan_id,
        "step": step,
        "policy_version": version,
        "n": plan.n,
        "reward_mean": reward_mean,
        "engine": worker.backend.name,
        # load: reading a new policy into the engine (0 when the version was loaded)
        "seconds": {"wait": seconds.wait, "load": seconds.load, "generate": seconds.generate},
        # the trainer scores tokens under the same sampling distribution
        "temperature": config.sampling.temperature,
        "max_new_tokens": config.sampling.max_new_tokens,
        # which share of the step this is, and its prompts left out as too long: the
        # trainer checks that the parts hold every other prompt of the step exactly once
        "worker": config.worker,
        "workers": plan.rollout_workers,
        "dropped": dropped,
    }

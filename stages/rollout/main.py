"""proactive rollout: the long-running generation worker.

For every RL step of the plan it waits for a policy recent enough (max_staleness), samples n
responses for each of the step's prompts, scores each whole group with the shared reward, and
publishes `rollouts/step_N/rollouts.parquet`. Runs beside `proactive grpo`:

    proactive rollout --run-dir checkpoints/default --set reward_kwargs.beta=0.5

With grpo's `rollout_workers=N`, N of these split each step, each started with its `worker`
(0..N-1) and publishing its share as `rollouts/part-<worker>-of-N/step_N`:

    proactive rollout --run-dir checkpoints/default --set worker=1
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click

from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import (
    ROLLOUTS_FILE,
    DataPaths,
    RunPaths,
    numbered_children,
    rollout_worker_name,
)
from proactive_rl.shared.publish import (
    claim_outputs,
    failure_reported,
    is_stable,
    read_json,
    read_marker,
    remove_unpublished,
    staged,
    verified_model,
    verified_processed,
    wait_for,
    worker_status,
)
from proactive_rl.shared.schedule import Plan, read_plan
from proactive_rl.stages.common import (
    check_writable,
    config_options,
    dir_options,
    reuse_options,
    save_config,
)
from proactive_rl.stages.rollout.config import RolloutConfig

logger = logging.getLogger(__name__)


@click.command(
    help="Rollout worker: for each RL step of the plan published by `proactive grpo`, wait for "
    "the policy it needs, sample n responses per prompt, score whole groups with the reward "
    "and publish <run-dir>/rollouts/step_N (with grpo's rollout_workers=N > 1: this worker's "
    "share, <run-dir>/rollouts/part-<worker>-of-N/step_N). Exits after the plan's last step.",
    epilog="\b\nConfig fields (--set key=value, dotted for nested):\n"
    + describe(RolloutConfig, stage="rollout"),
)
@dir_options
@config_options
@reuse_options
def command(run_dir, data_dir, recipe, config_file, overrides, resume, clean):
    # any failure, from the config on, reaches grpo through a status file: the config's as
    # the rollout's (the worker is not known before it loads), later ones as this worker's,
    # the file grpo watches while it waits for this worker's part
    paths = RunPaths(run_dir)
    with failure_reported(paths.status("rollout")):
        config = load_config(RolloutConfig, config_file, overrides, recipe or None, "rollout")
    with failure_reported(paths.status(rollout_worker_name(config.worker))):
        run(config, run_dir, data_dir, resume=resume, clean=clean)


def latest_policy(paths: RunPaths, plan_id: str) -> tuple[int, Path] | None:
    for version, folder in reversed(numbered_children(paths.policies)):
        if is_stable(folder) and read_marker(folder).get("plan_id") == plan_id:
            return version, folder
    return None


POLICY_DAMAGED = "Check the volume for errors, then start both workers over with --clean"


def examine(step: int, prompt: str, truth: str, texts: list[str], scores: list[float]) -> str:
    lines = [f"[step {step}] prompt: {prompt[-200:]!r}  ground truth: {truth!r}"]
    lines += [f"  reward {s:+.3f}: {t[:200]!r}" for t, s in zip(texts, scores, strict=True)]
    return "\n".join(lines)


def run(config: RolloutConfig, run_dir: Path, data_dir: Path, resume: bool, clean: bool) -> None:
    from proactive_rl.engine.generation import make_backend
    from proactive_rl.shared.rewards import load_reward

    paths = RunPaths(run_dir)
    name = rollout_worker_name(config.worker)
    outputs = [paths.rollouts, paths.logs(name), paths.config(name).parent]
    check_writable([paths.root, *outputs, paths.status(name).parent], "pass another --run-dir")
    # fail on a bad reward or worker index before touching the run directory or waiting
    reward_fn = load_reward(config.reward, config.reward_kwargs)
    if paths.plan.is_file() and not clean:  # --clean: grpo is about to write a new plan
        check_worker(config, paths, read_plan(paths.plan))
    if clean:
        refuse_rewriting_history(config, paths)
    # only this worker's own folders: the other workers may have published theirs already
    claim_outputs(paths.rollout_outputs(config.worker), name, resume, clean)
    if resume and config.worker == 0:
        # leftovers of one-worker steps sit in rollouts/ itself, beside the other workers' parts
        remove_unpublished(paths.rollouts)
    save_config(paths.config(name), config)
    started = time.time()

    # Running (heartbeats) from before the engine starts, which can take minutes: a grpo worker
    # resumed at the same time takes a status older than its own start for a peer not coming.
    with worker_status(paths.status(name)):
        # one engine for the whole run: a new plan (grpo --clean) reuses it too; it fails here,
        # before any waiting, where it cannot run
        backend = make_backend(
            config.backend,
            config.precision,
            config.vllm,
            config.sampling.max_prompt_tokens + config.sampling.max_new_tokens,
        )
        logger.info("generation backend: %s", type(backend).__name__)
        # grpo rewrites the plan when it starts over (--clean); a stale plan read before that
        # is abandoned as soon as the new one appears, so the worker follows the current plan.
        while not follow_plan(config, paths, data_dir, started, reward_fn, backend):
            logger.info("the plan changed (grpo started over): following the new plan")
        backend.close()


def check_worker(config: RolloutConfig, paths: RunPaths, plan: Plan) -> None:
    if config.worker >= plan.rollout_workers:
        raise UserError(
            f"worker={config.worker}, but the plan {paths.plan} has rollout_workers="
            f"{plan.rollout_workers} (workers 0..{plan.rollout_workers - 1}): give each rollout "
            "process its own worker below rollout_workers, or start grpo with more "
            "rollout_workers (in compose: ROLLOUT_WORKERS)"
        )


def owns_steps(paths: RunPaths, worker: int) -> bool:
    """Whether this worker has rollouts on the volume (published or not)."""
    return any(
        p.name.startswith("step_") or any(p.rglob("step_*")) for p in paths.rollout_outputs(worker)
    )


def trained_on(paths: RunPaths, worker: int = 0) -> int | None:
    """The newest policy grpo trained on rollouts of the current plan (None: no such policy, or
    no rollouts of this worker to lose)."""
    if not paths.plan.is_file() or not owns_steps(paths, worker):
        return None
    plan_id = read_plan(paths.plan).plan_id
    trained = [
        version
        for version, folder in numbered_children(paths.policies)
        if version >= 1 and is_stable(folder) and read_marker(folder).get("plan_id") == plan_id
    ]
    return max(trained, default=None)


def grpo_running_since(paths: RunPaths, since: float) -> bool:
    try:
        status = read_json(paths.status("grpo"))
    except (OSError, ValueError):
        return False
    return status.get("state") == "running" and status.get("time", 0) >= since


def refuse_rewriting_history(config: RolloutConfig, paths: RunPaths) -> None:
    """`--clean` deletes the rollouts. Refused while grpo has trained on them under the current
    plan: new ones, sampled from newer policies, would not be what was trained. A grpo started
    with --clean at the same time (RUN_MODE=--clean) deletes that plan within seconds, so that
    is waited for, up to peer_quiet_timeout; a grpo running with the plan still in place (a
    heartbeat since we started: it has claimed its outputs) is not starting over."""
    since, deadline = time.time(), time.monotonic() + config.peer_quiet_timeout
    if trained_on(paths, config.worker) is not None:
        logger.info("rollout --clean: waiting for grpo to start the run over (--clean)")
    while (trained := trained_on(paths, config.worker)) is not None:
        over = time.monotonic() > deadline
        still = trained_on(paths, config.worker) is not None
        if over or (grpo_running_since(paths, since) and still):
            raise UserError(
                f"rollout --clean would delete rollouts that grpo trained policies 1..{trained} "
                f"on; new ones, sampled from newer policies, would not be what was trained. To "
                "start the RL run over, start both workers with --clean (grpo writes a new "
                "plan); to continue it, start both with --resume"
            )
        time.sleep(0.5)


def wait_plan(config: RolloutConfig, paths: RunPaths, started: float) -> Plan:
    return wait_for(
        lambda: read_plan(paths.plan) if paths.plan.is_file() else None,
        f"the RL plan {paths.plan}",
        timeout=config.wait_timeout,
        peer="grpo",
        peer_status=paths.status("grpo"),
        started_after=started,
        quiet_after=config.peer_quiet_timeout,
    )


def follow_plan(
    config, paths: RunPaths, data_dir: Path, started: float, reward_fn, backend
) -> bool:
    """Run the current plan to its end (True) or return False as soon as it is replaced."""
    from transformers import AutoTokenizer

    from proactive_rl.shared.rewards import score_group
    from proactive_rl.shared.schemas import RL_DATA, ROLLOUTS, read_table, write_table

    plan = wait_plan(config, paths, started)
    check_worker(config, paths, plan)  # again: the plan may be new since start-up
    workers = plan.rollout_workers
    train_file = DataPaths(data_dir).rl_train
    verified_processed(DataPaths(data_dir))
    train = read_table(train_file, RL_DATA).to_pylist()
    if len(train) != plan.train_rows:
        raise UserError(
            f"{train_file} has {len(train)} rows but the plan was made for {plan.train_rows}: "
            "rerun prep and grpo so both use the same data"
        )
    done = [
        s
        for s, folder in numbered_children(paths.rollout_home(config.worker, workers))
        if is_stable(folder) and read_marker(folder).get("plan_id") == plan.plan_id
    ]
    first = max(done) + 1 if done else 0
    logger.info(
        "plan %s: %d steps x %d prompts x n=%d; worker %d of %d; starting at step %d",
        plan.plan_id,
        plan.total_steps,
        plan.batch,
        plan.n,
        config.worker,
        workers,
        first,
    )

    def plan_changed() -> bool:
        return paths.plan.is_file() and read_plan(paths.plan).plan_id != plan.plan_id

    tokenizer = None
    loaded_version = -1
    for step in range(first, plan.total_steps):
        need = plan.min_policy_version(step)
        t_wait = time.perf_counter()
        found = wait_for(
            lambda need=need: (
                "replan"
                if plan_changed()
                else (p if (p := latest_policy(paths, plan.plan_id)) and p[0] >= need else None)
            ),
            f"policy version >= {need} in {paths.policies} (for rollout step {step})",
            timeout=config.wait_timeout,
            peer="grpo",
            peer_status=paths.status("grpo"),
            started_after=started,
            quiet_after=config.peer_quiet_timeout,
        )
        if found == "replan":
            return False
        version, folder = found
        wait_s = time.perf_counter() - t_wait
        load_s = 0.0
        if version != loaded_version:
            t_load = time.perf_counter()
            verified_model(folder, POLICY_DAMAGED)  # once a version, before the engine reads it
            backend.load(folder)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            loaded_version = version
            load_s = time.perf_counter() - t_load

        t_gen = time.perf_counter()
        rows, dropped = generate_step(
            config, plan, step, version, train, backend, tokenizer, reward_fn, score_group
        )
        gen_s = time.perf_counter() - t_gen
        if plan_changed():
            return False

        reward_mean = sum(r["reward"] for r in rows) / len(rows)
        meta = {
            "plan_id": plan.plan_id,
            "step": step,
            "policy_version": version,
            "n": plan.n,
            "reward_mean": reward_mean,
            "engine": backend.name,
            # load: reading a new policy into the engine (0 when the version was loaded)
            "seconds": {"wait": wait_s, "load": load_s, "generate": gen_s},
            # the trainer scores tokens under the same sampling distribution
            "temperature": config.sampling.temperature,
            "max_new_tokens": config.sampling.max_new_tokens,
            # which share of the step this is, and its prompts left out as too long: the
            # trainer checks that the parts hold every other prompt of the step exactly once
            "worker": config.worker,
            "workers": workers,
            "dropped": dropped,
        }
        with staged(paths.rollout_part(step, config.worker, workers), meta) as staging:
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
            wait_s,
            gen_s,
        )
    return True


def generate_step(config, plan, step, version, train, backend, tokenizer, reward_fn, score_group):
    """Sample and score this worker's share of the step's groups; returns rollout rows (whole
    groups, in order) and the prompts of the share left out as too long."""
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    prompts = []
    dropped: list[int] = []
    for index in plan.worker_prompts(step, config.worker):
        record = train[index]
        text = tokenizer.apply_chat_template(
            record["prompt"], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > config.sampling.max_prompt_tokens:
            logger.warning(
                "step %d: prompt %d has %d tokens > max_prompt_tokens, dropped",
                step,
                index,
                len(ids),
            )
            dropped.append(index)
            continue
        prompts.append((index, record, text, ids))
    if not prompts:
        share = f" of worker {config.worker}'s share" if plan.rollout_workers > 1 else ""
        raise UserError(f"step {step}: every prompt{share} is longer than max_prompt_tokens")

    examined = 0
    size = config.generation_batch_prompts
    # a bar on terminals only (disable=None): container logs get the per-step line instead
    for start in tqdm(
        range(0, len(prompts), size), desc=f"step {step}", unit="batch", disable=None, leave=False
    ):
        chunk = prompts[start : start + size]
        # start * N + worker: one worker's seeds are those of a one-worker run (N=1), and no
        # two workers' calls share a seed. A call's samples depend on the whole batch (one
        # seed per call), so the union of the parts still depends on N (docs/contract.md).
        offset = start * plan.rollout_workers + config.worker
        groups = backend.generate(
            [ids for _, _, _, ids in chunk],
            plan.n,
            config.sampling,
            seed=config.seed * 1_000_003 + step * 1_009 + offset,
        )
        for (index, record, text, ids), samples in zip(chunk, groups, strict=True):
            texts = [tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in samples]
            truth = record["reward_model"]["ground_truth"]
            scored = score_group(
                reward_fn,
                text,
                texts,
                truth,
                record["data_source"],
                record["extra_info"],
                config.reward_kwargs,
            )
            if examined < config.num_examine:
                logger.info("%s", examine(step, text, truth, texts, scored.scores))
                examined += 1
            for k, (sample, response, score, parts) in enumerate(
                zip(samples, texts, scored.scores, scored.parts, strict=True)
            ):
                rows.append(
                    {
                        "step": step,
                        "policy_version": version,
                        "group_id": index,
                        "sample_index": k,
                        "data_source": record["data_source"],
                        "prompt_text": text,
                        "prompt_ids": ids,
                        "response_ids": sample.token_ids,
                        "response_text": response,
                        "sampling_logprobs": sample.logprobs,
                        "finish_reason": sample.finish_reason,
                        "ground_truth": truth,
                        "reward": float(score),
                        "reward_parts": parts,
                    }
                )
    return rows, dropped

"""One rollout step of one worker: tokenize its share of the step's prompts, sample n responses
per prompt in batches, score each whole group with the reward and build the ROLLOUTS rows.
Imported from `run()` only (it reaches the engine and the tokenizer)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proactive_rl.engine.generation import Backend, Sample
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.rewards import GroupScore, RewardFn, score_group
from proactive_rl.shared.schedule import Plan
from proactive_rl.shared.schemas import RolloutRow
from proactive_rl.stages.rollout.config import RolloutConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# an RL_DATA row (veRL's processed-data format) as pyarrow's to_pylist gives it
TrainRecord = dict[str, Any]


@dataclass(frozen=True)
class StepContext:
    """What every step of one plan samples with."""

    config: RolloutConfig
    plan: Plan
    train: list[TrainRecord]  # rl_train.parquet, indexed by the plan's prompt numbers
    backend: Backend
    reward_fn: RewardFn


@dataclass(frozen=True)
class LoadedPolicy:
    """The policy version in the engine, and its tokenizer (the policy folder's own)."""

    version: int
    tokenizer: PreTrainedTokenizerBase


@dataclass(frozen=True)
class Prompt:
    """One prompt of the step, templated and tokenized exactly as it is sampled."""

    index: int  # its row in rl_train.parquet: the group_id
    record: TrainRecord
    text: str
    ids: list[int]


@dataclass(frozen=True)
class StepRollouts:
    rows: list[RolloutRow]  # whole groups, in the order of the worker's share
    dropped: list[int]  # prompts of the share left out as longer than max_prompt_tokens


def generate_step(ctx: StepContext, step: int, policy: LoadedPolicy) -> StepRollouts:
    """Sample and score this worker's share of the step's groups."""
    prompts, dropped = tokenize_share(ctx, step, policy.tokenizer)
    rows: list[RolloutRow] = []
    for number, (prompt, samples) in enumerate(sample_groups(ctx, step, prompts)):
        texts = [policy.tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in samples]
        scored = score(ctx, prompt, texts)
        if number < ctx.config.num_examine:
            logger.info("%s", examine(step, prompt, texts, scored.scores))
        rows += group_rows(step, policy.version, prompt, samples, texts, scored)
    return StepRollouts(rows, dropped)


def tokenize_share(
    ctx: StepContext, step: int, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Prompt], list[int]]:
    """The worker's prompts of the step, chat-templated and tokenized, and those dropped as too
    long; a share with none left is an error."""
    prompts: list[Prompt] = []
    dropped: list[int] = []
    for index in ctx.plan.worker_prompts(step, ctx.config.worker):
        record = ctx.train[index]
        text = tokenizer.apply_chat_template(
            record["prompt"], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > ctx.config.sampling.max_prompt_tokens:
            logger.warning(
                "step %d: prompt %d has %d tokens > max_prompt_tokens, dropped",
                step,
                index,
                len(ids),
            )
            dropped.append(index)
            continue
        prompts.append(Prompt(index, record, text, ids))
    if not prompts:
        share = f" of worker {ctx.config.worker}'s share" if ctx.plan.rollout_workers > 1 else ""
        raise UserError(f"step {step}: every prompt{share} is longer than max_prompt_tokens")
    return prompts, dropped


def sample_groups(
    ctx: StepContext, step: int, prompts: list[Prompt]
) -> Iterator[tuple[Prompt, list[Sample]]]:
    """Each prompt with its n samples, in order, generated generation_batch_prompts at a time
    (lazily: a batch's groups are scored before the next batch is generated)."""
    from tqdm import tqdm

    size = ctx.config.generation_batch_prompts
    # a bar on terminals only (disable=None): container logs get the per-step line instead
    for start in tqdm(
        range(0, len(prompts), size), desc=f"step {step}", unit="batch", disable=None, leave=False
    ):
        chunk = prompts[start : start + size]
        groups = ctx.backend.generate(
            [prompt.ids for prompt in chunk],
            ctx.plan.n,
            ctx.config.sampling,
            seed=batch_seed(ctx, step, start),
        )
        yield from zip(chunk, groups, strict=True)


def batch_seed(ctx: StepContext, step: int, start: int) -> int:
    """The seed of the generate call whose batch starts at prompt `start` of the share.

    start * N + worker: one worker's seeds are those of a one-worker run (N=1), and no two
    workers' calls share a seed. A call's samples depend on the whole batch (one seed per
    call), so the union of the parts still depends on N (docs/contract.md)."""
    offset = start * ctx.plan.rollout_workers + ctx.config.worker
    return ctx.config.seed * 1_000_003 + step * 1_009 + offset


def score(ctx: StepContext, prompt: Prompt, texts: list[str]) -> GroupScore:
    """The reward of one whole group (one call: group-aware rewards compare the responses)."""
    record = prompt.record
    return score_group(
        ctx.reward_fn,
        prompt.text,
        texts,
        record["reward_model"]["ground_truth"],
        record["data_source"],
        record["extra_info"],
        ctx.config.reward_kwargs,
    )


def group_rows(
    step: int,
    version: int,
    prompt: Prompt,
    samples: list[Sample],
    texts: list[str],
    scored: GroupScore,
) -> list[RolloutRow]:
    """The ROLLOUTS rows of one scored group, one per sample, in sample order."""
    record = prompt.record
    return [
        RolloutRow(
            step=step,
            policy_version=version,
            group_id=prompt.index,
            sample_index=k,
            data_source=record["data_source"],
            prompt_text=prompt.text,
            prompt_ids=prompt.ids,
            response_ids=sample.token_ids,
            response_text=response,
            sampling_logprobs=sample.logprobs,
            finish_reason=sample.finish_reason,
            ground_truth=record["reward_model"]["ground_truth"],
            reward=float(reward),
            reward_parts=parts,
        )
        for k, (sample, response, reward, parts) in enumerate(
            zip(samples, texts, scored.scores, scored.parts, strict=True)
        )
    ]


def examine(step: int, prompt: Prompt, texts: list[str], scores: list[float]) -> str:
    """A group for the log: the prompt's end, the ground truth and each response's reward."""
    truth = prompt.record["reward_model"]["ground_truth"]
    lines = [f"[step {step}] prompt: {prompt.text[-200:]!r}  ground truth: {truth!r}"]
    lines += [f"  reward {s:+.3f}: {t[:200]!r}" for t, s in zip(texts, scores, strict=True)]
    return "\n".join(lines)

"""How one RL step's rows are cut for the update: mini-batches (one optimizer step each) of whole
groups, this process's share of each, and how many forward passes every process runs for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proactive_rl.shared.schemas import RolloutRow
from proactive_rl.stages.grpo.config import GrpoConfig

if TYPE_CHECKING:
    from proactive_rl.engine.parallel import Parallel


@dataclass(frozen=True)
class MicroSplit:
    """How a process cuts its rows of a mini-batch into forward passes (split_micro): `size`
    rows, or with `tokens` that token budget. `pad_to` > the process's own count adds
    passes that count for nothing, as every process must run as many as the others (ZeRO-3's
    forwards and the gradient reductions are collective; None: just its own)."""

    size: int
    tokens: int | None = None
    pad_to: int | None = None


@dataclass(frozen=True)
class MiniBatch:
    """One optimizer step's rows (positions in the step's rows; whole groups) and this
    process's share of them, with the passes to pad to for training and for pi_old."""

    rows: list[int]
    mine: list[int]  # this process's rows; with `stand_in`, one row of the mini-batch
    # This process has no group in the mini-batch: `mine` is one row that counts for nothing,
    # so the process still joins the collective passes.
    stand_in: bool
    train: MicroSplit  # the training micro-batches (gradient accumulation)
    old: MicroSplit  # the no-grad forwards that freeze pi_old


def plan_mini_batches(
    rows: list[RolloutRow], config: GrpoConfig, n: int, par: Parallel
) -> list[MiniBatch]:
    """The step's mini-batches of `mini_batch_prompts` groups each, in order. Groups stay whole
    inside a mini-batch because rows arrive ordered by group."""
    per_mini = config.mini_batch_prompts * n
    micro, micro_tokens = config.micro_batch_size, config.micro_batch_tokens
    lp_micro = config.log_prob_micro_batch_size or micro
    lp_tokens = config.log_prob_micro_batch_tokens
    plan = []
    for start in range(0, len(rows), per_mini):
        mini = list(range(start, min(start + per_mini, len(rows))))
        mine = par.shard(rows, mini)
        passes = par.micro_batches(rows, mini, micro, micro_tokens)
        lp_passes = par.micro_batches(rows, mini, lp_micro, lp_tokens)
        plan.append(
            MiniBatch(
                rows=mini,
                mine=mine or mini[:1],
                stand_in=not mine,
                train=MicroSplit(micro, micro_tokens, passes),
                old=MicroSplit(lp_micro, lp_tokens, lp_passes),
            )
        )
    return plan

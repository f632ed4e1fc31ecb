"""The veRL parity suite: our functions against veRL's own released code (veRL 0.9.1, pinned in
requirements/verl.txt). It runs in .venv-verl (`make test-verl`, part of `make test`), never in
.venv, which has no veRL: the main suite is run with --ignore=tests/verl.

Shared here: the random float64 batches every comparison uses, the tolerance, and veRL's actor
config built as its trainer builds it (the FSDP actor's dataclass, veRL's defaults for every
field a test does not set)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from verl.workers.config import FSDPActorConfig

from proactive_rl.stages.grpo.config import LossConfig

TOL = 1e-10  # float64: both sides are the same formulas, so only rounding may differ
SEEDS = (0, 1, 2)
ROWS, COLS = 24, 16
GROUPS = (4, 4, 4, 4, 3, 2, 1, 1, 1)  # includes groups of one; sums to ROWS
MICRO = 7  # rows per micro-batch: 7 + 7 + 7 + 3
FULLY_MASKED = 5  # a response whose tokens all carry no loss


@dataclass
class Batch:
    """One mini-batch of responses; [ROWS, COLS] tensors unless noted. mask is float32, as
    stages/grpo/update.py builds it; lengths are the responses' token counts (mask <= them)."""

    logp: torch.Tensor
    old: torch.Tensor
    ref: torch.Tensor
    adv: torch.Tensor  # [ROWS]
    rewards: torch.Tensor  # [ROWS]
    groups: torch.Tensor  # [ROWS]
    mask: torch.Tensor
    lengths: torch.Tensor  # [ROWS]
    entropy: torch.Tensor
    is_weights: torch.Tensor


def random_batch(seed: int) -> Batch:
    """Varied lengths and masks (holes, a fully masked response), ratios far outside the clip
    range on both sides and beyond the +-20 log-ratio clamp, negative, zero and positive
    advantages, reference log-probs beyond the k3 clamps."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    lengths = torch.randint(1, COLS + 1, (ROWS,), generator=g)
    lengths[:5] = COLS  # the rows that carry the extreme tokens below
    mask = (torch.arange(COLS) < lengths.unsqueeze(-1)).float()
    mask[8:12] *= (rand(4, COLS) > 0.2).float()  # holes, as multi-turn tool tokens
    mask[FULLY_MASKED] = 0.0
    logp = -rand(ROWS, COLS) * 4
    old = logp + randn(ROWS, COLS) * 0.5
    old[0, 0], old[1, 1], old[2, 2] = logp[0, 0] - 30, logp[1, 1] + 30, logp[2, 2] - 800
    ref = logp + randn(ROWS, COLS) * 0.8
    ref[3, 0], ref[4, 1] = logp[3, 0] + 40, logp[4, 1] - 40
    adv = randn(ROWS)
    adv[0], adv[1], adv[2], adv[6] = -1.3, 0.9, -0.7, 0.0
    rewards = (rand(ROWS) > 0.5).double() + 0.1 * randn(ROWS)
    rewards[4:8] = 0.5  # a group whose rewards tie
    groups = torch.repeat_interleave(torch.arange(len(GROUPS)), torch.tensor(GROUPS))
    return Batch(
        logp=logp,
        old=old,
        ref=ref,
        adv=adv,
        rewards=rewards,
        groups=groups,
        mask=mask,
        lengths=lengths,
        entropy=rand(ROWS, COLS) * 3,
        is_weights=rand(ROWS, COLS) * 2,
    )


@pytest.fixture(params=SEEDS, ids=lambda s: f"seed{s}")
def batch(request) -> Batch:
    return random_batch(request.param)


def assert_same(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.dtype == theirs.dtype == torch.float64, what
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOL, msg=lambda m: f"{what}: {m}")


# (clip_ratio_low, clip_ratio_high, clip_ratio_c): veRL's defaults, DAPO's asymmetric clip,
# and a tighter dual-clip
CLIPS = [(0.2, 0.2, 3.0), (0.2, 0.28, 3.0), (0.2, 0.28, 1.5)]
AGGS = [
    "token-mean",
    "token-sum",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
]
KL_TYPES = ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"]
KL_TYPES += [k + "+" for k in KL_TYPES]


def verl_actor(clip: tuple[float, float, float], **fields) -> FSDPActorConfig:
    """veRL's actor config (what ppo_loss and compute_policy_loss_vanilla read)."""
    low, high, c = clip
    return FSDPActorConfig(
        strategy="fsdp",
        rollout_n=4,
        ppo_mini_batch_size=ROWS // 4,
        ppo_micro_batch_size_per_gpu=MICRO,
        clip_ratio_low=low,
        clip_ratio_high=high,
        clip_ratio_c=c,
        **fields,
    )


def our_config(clip: tuple[float, float, float], **fields) -> LossConfig:
    low, high, c = clip
    return LossConfig(clip_eps_low=low, clip_eps_high=high, dual_clip=c, **fields)

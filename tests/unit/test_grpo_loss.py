"""The production GRPO loss against a float64 reference written from the definitions in
rl-references.md with plain loops (independent of the production code path)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from proactive_rl.grpo.config import LossConfig
from proactive_rl.grpo.loss import Normalizer, group_advantages, policy_loss


def reference_loss(logp, old, ref, adv, mask, entropy, isw, cfg: LossConfig, max_len: float):
    """Scalar loss of one mini-batch, token by token, in float64."""
    rows, cols = logp.shape
    per_seq = []
    for b in range(rows):
        terms = []
        for t in range(cols):
            if mask[b, t] == 0:
                continue
            a = adv[b]
            ratio = torch.exp(logp[b, t] - old[b, t])
            clipped = torch.clamp(ratio, 1 - cfg.clip_eps_low, 1 + cfg.clip_eps_high)
            loss = torch.maximum(-a * ratio, -a * clipped)
            if cfg.dual_clip is not None and a < 0:
                loss = torch.minimum(loss, -a * cfg.dual_clip)
            if isw is not None:
                loss = loss * isw[b, t]
            if cfg.kl_coef > 0:
                if cfg.kl_type == "k1":
                    kl = logp[b, t] - ref[b, t]
                elif cfg.kl_type == "k2":
                    kl = 0.5 * (logp[b, t] - ref[b, t]) ** 2
                else:
                    d = torch.clamp(ref[b, t] - logp[b, t], -20, 20)
                    kl = torch.clamp(torch.exp(d) - d - 1, -10, 10)
                loss = loss + cfg.kl_coef * kl
            loss = loss - cfg.entropy_coef * entropy[b, t]
            terms.append(loss)
        per_seq.append(terms)
    n_seq = sum(1 for terms in per_seq if terms)
    if cfg.agg == "token-mean":
        return sum(sum(t) for t in per_seq) / sum(len(t) for t in per_seq)
    if cfg.agg == "seq-mean-token-mean":
        return sum(sum(t) / len(t) for t in per_seq if t) / n_seq
    return sum(sum(t) for t in per_seq) / (n_seq * max_len)


def random_batch(seed: int, rows: int = 6, cols: int = 9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, cols + 1, (rows,), generator=g)
    mask = (torch.arange(cols).unsqueeze(0) < lengths.unsqueeze(1)).double()
    logp = -torch.rand(rows, cols, generator=g, dtype=torch.float64) * 3
    # old and ref differ enough that ratios leave the clip range on both sides
    old = logp + torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.4
    ref = logp + torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.6
    adv = torch.randn(rows, generator=g, dtype=torch.float64)
    entropy = torch.rand(rows, cols, generator=g, dtype=torch.float64) * 5
    isw = torch.rand(rows, cols, generator=g, dtype=torch.float64) * 2
    return logp, old, ref, adv, mask, entropy, isw


CASES = list(
    itertools.product(
        ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"],
        ["k1", "k2", "low_var_kl"],
        [None, 3.0],
        [False, True],
    )
)


@pytest.mark.parametrize("agg, kl_type, dual_clip, use_isw", CASES)
def test_loss_and_gradient_match_the_float64_reference(agg, kl_type, dual_clip, use_isw):
    cfg = LossConfig(
        agg=agg,
        kl_type=kl_type,
        kl_coef=0.05,
        dual_clip=dual_clip,
        entropy_coef=0.01,
        clip_eps_high=0.28,
    )
    for seed in range(3):
        logp, old, ref, adv, mask, entropy, isw = random_batch(seed)
        isw = isw if use_isw else None
        max_len = 12.0
        norm = Normalizer(tokens=float(mask.sum()), sequences=float(mask.shape[0]), max_len=max_len)
        lp_prod = logp.clone().requires_grad_(True)
        prod, _ = policy_loss(lp_prod, old, adv, mask, cfg, norm, ref, entropy, isw)
        prod.backward()
        lp_ref = logp.clone().requires_grad_(True)
        expected = reference_loss(lp_ref, old, ref, adv, mask, entropy, isw, cfg, max_len)
        expected.backward()
        assert prod.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-12)
        torch.testing.assert_close(lp_prod.grad, lp_ref.grad, rtol=1e-6, atol=1e-12)
        assert lp_prod.grad.abs().sum() > 0


def test_clipping_is_exercised_by_the_random_batches():
    """Guards the test above: the batches must reach the clipped and dual-clipped regions."""
    logp, old, *_ = random_batch(0)
    ratio = torch.exp(logp - old)
    assert (ratio > 1.28).any() and (ratio < 0.8).any()


def test_ratio_one_without_kl_is_the_advantage_weighted_log_likelihood_gradient():
    logp, _, _, adv, mask, entropy, _ = random_batch(5)
    cfg = LossConfig(kl_coef=0.0, agg="token-mean")
    norm = Normalizer(tokens=float(mask.sum()), sequences=6.0, max_len=9.0)
    lp = logp.clone().requires_grad_(True)
    loss, _ = policy_loss(lp, lp.detach(), adv, mask, cfg, norm, None, entropy, None)
    loss.backward()
    plain = logp.clone().requires_grad_(True)
    (-(adv.unsqueeze(-1) * plain * mask).sum() / mask.sum()).backward()
    torch.testing.assert_close(lp.grad, plain.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "rewards, scale, expected, ties",
    [
        # group of 4: mean 0.5, unbiased std sqrt(1/3)
        ([1, 0, 1, 0], "group_std", [0.5 / math.sqrt(1 / 3)] * 1 + [-0.5 / math.sqrt(1 / 3)], 0),
        ([1, 0, 1, 0], "none", [0.5, -0.5], 0),
        ([0.3, 0.3, 0.3, 0.3], "group_std", [0.0, 0.0], 1),
    ],
)
def test_group_advantages(rewards, scale, expected, ties):
    r = torch.tensor(rewards + [2.0], dtype=torch.float64)  # plus a group of one
    groups = torch.tensor([7, 7, 7, 7, 9])
    adv, tie_frac = group_advantages(r, groups, scale, eps=1e-6)
    assert adv[0].item() == pytest.approx(expected[0], rel=1e-5)
    assert adv[1].item() == pytest.approx(expected[1], rel=1e-5, abs=1e-12)
    # a group of one has mean 0 and std 1 (veRL): its advantage is its reward
    assert adv[4].item() == pytest.approx(2.0 / (1 + 1e-6) if scale == "group_std" else 2.0)
    assert tie_frac == ties / 2

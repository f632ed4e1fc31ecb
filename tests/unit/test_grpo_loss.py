"""The production GRPO loss against a float64 reference written from the definitions in
rl-references.md with plain loops (independent of the production code path). The parity with
veRL's own code is tests/verl (its own environment)."""

from __future__ import annotations

import itertools
import math
from typing import get_args

import pytest
import torch
from pydantic import ValidationError

from proactive_rl.stages.grpo.config import LossConfig
from proactive_rl.stages.grpo.loss import (
    Normalizer,
    aggregate,
    group_advantages,
    kl_penalty,
    policy_loss,
)

ESTIMATORS = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}


def reference_kl(lp, ref, kind: str):
    """KL(pi || ref) estimate of one token; "+" = its value with k2's gradient."""
    base = ESTIMATORS.get(kind.rstrip("+"), kind.rstrip("+"))
    d = lp - ref
    if base == "k1":
        kl = d
    elif base == "abs":
        kl = torch.abs(d)
    elif base == "k2":
        kl = 0.5 * d**2
    else:
        x = torch.clamp(-d, -20, 20)
        kl = torch.clamp(torch.exp(x) - x - 1, -10, 10)
    if kind.endswith("+"):
        k2 = 0.5 * d**2
        kl = k2 + (kl - k2).detach()
    return kl


def reference_loss(logp, old, ref, adv, mask, entropy, isw, cfg: LossConfig, max_len: float):
    """Scalar loss of one mini-batch, token by token, in float64: pg, entropy and KL terms
    each aggregated, then pg - entropy_coef * entropy + kl_coef * kl."""
    rows, cols = logp.shape
    terms = {"pg": [], "ent": [], "kl": []}
    for b in range(rows):
        row = {"pg": [], "ent": [], "kl": []}
        for t in range(cols):
            if mask[b, t] == 0:
                continue
            a = adv[b]
            ratio = torch.exp(torch.clamp(logp[b, t] - old[b, t], -20, 20))
            clipped = torch.clamp(ratio, 1 - cfg.clip_eps_low, 1 + cfg.clip_eps_high)
            loss = torch.maximum(-a * ratio, -a * clipped)
            if a < 0:
                loss = torch.minimum(loss, -a * cfg.dual_clip)
            if isw is not None:
                loss = loss * isw[b, t]
            row["pg"].append(loss)
            row["ent"].append(entropy[b, t])
            row["kl"].append(reference_kl(logp[b, t], ref[b, t], cfg.kl_type))
        for name in terms:
            terms[name].append(row[name])

    def agg(per_seq):
        tokens = sum(len(t) for t in per_seq)
        if cfg.agg == "token-mean":
            return sum(sum(t) for t in per_seq) / tokens
        if cfg.agg == "token-sum":
            return sum(sum(t) for t in per_seq)
        if cfg.agg == "seq-mean-token-mean":
            # veRL's per-response divisor is the token count + 1e-8 (float64 mask here)
            return sum(sum(t) / (len(t) + 1e-8) for t in per_seq if t) / rows
        total = sum(sum(t) for t in per_seq) / rows
        return total / max_len if cfg.agg == "seq-mean-token-sum-norm" else total

    out = agg(terms["pg"]) - cfg.entropy_coef * agg(terms["ent"])
    return out + cfg.kl_coef * agg(terms["kl"])


def random_batch(seed: int, rows: int = 6, cols: int = 9):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, cols + 1, (rows,), generator=g)
    mask = (torch.arange(cols).unsqueeze(0) < lengths.unsqueeze(1)).double()
    if seed % 2:
        mask[1] = 0.0  # a response with no loss tokens still counts as a response
    logp = -torch.rand(rows, cols, generator=g, dtype=torch.float64) * 3
    # old and ref differ enough that ratios leave the clip range on both sides
    old = logp + torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.4
    old[0, 0] = logp[0, 0] - 30.0  # a ratio beyond the +-20 log-ratio clamp
    ref = logp + torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.6
    adv = torch.randn(rows, generator=g, dtype=torch.float64)
    adv[0] = -adv[0].abs()  # so the dual clip caps the clamped ratio above
    entropy = torch.rand(rows, cols, generator=g, dtype=torch.float64) * 5
    isw = torch.rand(rows, cols, generator=g, dtype=torch.float64) * 2
    return logp, old, ref, adv, mask, entropy, isw


AGGS = list(get_args(LossConfig.model_fields["agg"].annotation))
CASES = list(itertools.product(AGGS, ["k1", "abs", "mse", "low_var_kl", "k3+"], [False, True]))


@pytest.mark.parametrize("agg, kl_type, use_isw", CASES)
def test_loss_and_gradient_match_the_float64_reference(agg, kl_type, use_isw):
    cfg = LossConfig(agg=agg, kl_type=kl_type, kl_coef=0.05, entropy_coef=0.01, clip_eps_high=0.28)
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
        assert prod.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
        torch.testing.assert_close(lp_prod.grad, lp_ref.grad, rtol=1e-12, atol=1e-12)
        assert lp_prod.grad.abs().sum() > 0


def test_clipping_is_exercised_by_the_random_batches():
    """Guards the test above: the batches reach the clipped, dual-clipped and clamped regions."""
    logp, old, _, adv, mask, *_ = random_batch(0)
    ratio = torch.exp(logp - old)
    assert (ratio > 1.28).any() and (ratio < 0.8).any()
    assert ((ratio > 3.0) & (adv.unsqueeze(-1) < 0) & (mask > 0)).any()
    assert (logp - old).max() > 20


def test_dual_clip_caps_the_loss_of_a_negative_advantage_and_the_clamp_bounds_the_ratio():
    cfg = LossConfig(kl_coef=0.0, agg="token-sum")
    norm = Normalizer(tokens=1.0, sequences=1.0, max_len=1.0)
    one = torch.ones(1, 1, dtype=torch.float64)
    for gap, adv in ((50.0, -2.0), (2.0, -2.0), (-50.0, 1.0)):
        logp = torch.full((1, 1), gap, dtype=torch.float64, requires_grad=True)
        loss, stats = policy_loss(logp, 0 * one, torch.tensor([adv]), one, cfg, norm)
        loss.backward()
        if adv < 0:  # ratio e^50 (clamped to e^20) and e^2 both exceed c = 3: loss -A*c, no grad
            assert loss.item() == pytest.approx(-adv * 3.0)
            assert logp.grad.item() == 0.0 and stats["dual_clip_frac"].item() == 1.0
        else:
            assert stats["ratio_mean"].item() == pytest.approx(math.exp(-20.0))


def test_values_outside_the_mask_never_count():
    values = torch.tensor([[1.0, float("nan"), float("inf")], [2.0, 3.0, -float("inf")]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    norm = Normalizer(tokens=3.0, sequences=2.0, max_len=3.0)
    for agg, expected in (("token-mean", 2.0), ("token-sum", 6.0), ("seq-mean-token-mean", 1.75)):
        assert aggregate(values, mask, agg, norm).item() == pytest.approx(expected)


def test_kl_aliases_and_straight_through_variants():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(4, 5, generator=g, dtype=torch.float64) * 3
    ref = logp + torch.randn(4, 5, generator=g, dtype=torch.float64)
    for alias, name in (("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3")):
        torch.testing.assert_close(kl_penalty(logp, ref, alias), kl_penalty(logp, ref, name))
    for name in ("k1", "abs", "k2", "k3"):
        lp_plain = logp.clone().requires_grad_(True)
        lp_st = logp.clone().requires_grad_(True)
        plain, st = kl_penalty(lp_plain, ref, name), kl_penalty(lp_st, ref, name + "+")
        torch.testing.assert_close(st, plain, rtol=0, atol=0)  # same value
        st.sum().backward()
        torch.testing.assert_close(lp_st.grad, logp - ref)  # k2's gradient
        plain.sum().backward()
        assert name == "k2" or not torch.allclose(lp_plain.grad, lp_st.grad)


def test_defaults_are_verls():
    cfg = LossConfig()
    assert (cfg.dual_clip, cfg.is_correction, cfg.kl_type, cfg.agg) == (
        3.0,
        "none",
        "low_var_kl",
        "token-mean",
    )
    for bad in ({"dual_clip": None}, {"dual_clip": 1.0}, {"kl_type": "full"}, {"agg": "mean"}):
        with pytest.raises(ValidationError):
            LossConfig(**bad)


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

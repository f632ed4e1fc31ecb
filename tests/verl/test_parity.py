"""Our GRPO loss functions (proactive_rl.stages.grpo.loss) against veRL 0.9.1's own: the same random
float64 batches (tests/verl/conftest.py) through both, value for value and gradient for
gradient, at 1e-10. Each test names the veRL function it compares with. The last test shows
the comparison can fail: a loss without dual-clip, or without the log-ratio clamp, is caught."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import (
    agg_loss,
    compute_grpo_outcome_advantage,
    compute_policy_loss_vanilla,
)
from verl.trainer.ppo.core_algos import kl_penalty as verl_kl_penalty
from verl.utils import tensordict_utils as tu
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits
from verl.workers.engine.fsdp.transformer_impl import _scale_logits_by_temperature
from verl.workers.utils.losses import ppo_loss

import proactive_rl.stages.grpo.loss as ours_mod
from proactive_rl.stages.grpo.loss import (
    Normalizer,
    aggregate,
    group_advantages,
    kl_penalty,
    policy_loss,
    token_logprobs,
)
from tests.verl.conftest import (
    AGGS,
    CLIPS,
    COLS,
    KL_TYPES,
    MICRO,
    ROWS,
    SEEDS,
    TOL,
    Batch,
    assert_same,
    our_config,
    random_batch,
    verl_actor,
)

MICRO_BATCHES = [slice(i, min(i + MICRO, ROWS)) for i in range(0, ROWS, MICRO)]


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def normalizer(batch: Batch, scale: int | None = None) -> Normalizer:
    """What stages/grpo/update.py builds per mini-batch (max_len: max_new_tokens = COLS)."""
    return Normalizer(tokens=float(batch.mask.sum()), sequences=float(ROWS), max_len=scale or COLS)


def global_batch_info(batch: Batch, scale: int | None = None) -> dict:
    """What veRL's FSDP engine and ppo_loss pass agg_loss per mini-batch, on one process."""
    return {
        "dp_size": 1,
        "batch_num_tokens": int(batch.mask.sum()),
        "global_batch_size": ROWS,
        "loss_scale_factor": scale,
    }


def token_advantages(batch: Batch) -> torch.Tensor:
    """veRL's advantages are per token, zero outside the response mask."""
    return batch.adv.unsqueeze(-1) * batch.mask.bool()


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_group_advantages_are_verls(batch, norm_by_std, eps):
    """vs core_algos.compute_grpo_outcome_advantage (groups of 4, 3, 2, one, a tie)."""
    scale = "group_std" if norm_by_std else "none"
    ours, _ = group_advantages(batch.rewards, batch.groups, scale, eps)
    # veRL reads the outcome reward as the sum of the token-level rewards
    token_rewards = torch.zeros(ROWS, COLS, dtype=torch.float64)
    token_rewards[torch.arange(ROWS), batch.lengths - 1] = batch.rewards
    theirs, _ = compute_grpo_outcome_advantage(
        token_rewards, batch.mask.bool(), batch.groups.numpy(), eps, norm_by_std
    )
    assert_same(ours.unsqueeze(-1) * batch.mask, theirs, "advantages")


@pytest.mark.parametrize("kind", KL_TYPES)
def test_kl_estimators_are_verls(batch, kind):
    """vs core_algos.kl_penalty (kl_penalty_forward, straight-through for "+"): values, and
    gradients wrt the policy's and the reference's log-probs."""
    upstream = batch.is_weights  # any non-constant weighting of the tokens' gradients
    ours_in, theirs_in = [leaf(batch.logp), leaf(batch.ref)], [leaf(batch.logp), leaf(batch.ref)]
    ours, theirs = kl_penalty(*ours_in, kind), verl_kl_penalty(*theirs_in, kind)
    assert_same(ours, theirs, kind)
    (ours * upstream).sum().backward()
    (theirs * upstream).sum().backward()
    for name, a, b in zip(("d/dlogp", "d/dref"), ours_in, theirs_in, strict=True):
        assert_same(a.grad, b.grad, f"{kind} {name}")
        assert a.grad.abs().sum() > 0, name


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("scale", [None, 40])
@pytest.mark.parametrize("masks", ["float32 vs bool", "float64"])
def test_aggregation_is_verls_per_micro_batch(batch, agg, scale, masks):
    """vs core_algos.agg_loss given the mini-batch's global batch info (as ppo_loss passes it):
    each micro-batch's share, and the gradient of their sum. Masks as each side builds them
    (ours float32, veRL's bool), and the same float64 mask on both."""
    ours_mask = batch.mask.double() if masks == "float64" else batch.mask
    theirs_mask = batch.mask.double() if masks == "float64" else batch.mask.bool()
    ours_v, theirs_v = leaf(batch.entropy), leaf(batch.entropy)
    norm, info = normalizer(batch, scale), global_batch_info(batch, scale)
    ours_total = theirs_total = 0.0
    for rows in MICRO_BATCHES:
        ours = aggregate(ours_v[rows], ours_mask[rows], agg, norm)
        theirs = agg_loss(theirs_v[rows], theirs_mask[rows], agg, **info)
        assert_same(ours, theirs, f"{agg} rows {rows}")
        ours_total, theirs_total = ours_total + ours, theirs_total + theirs
    ours_total.backward()
    theirs_total.backward()
    assert_same(ours_v.grad, theirs_v.grad, f"{agg} gradient")
    # and the micro-batches add up to the mini-batch's loss in one piece
    assert_same(ours_total.detach(), aggregate(batch.entropy, ours_mask, agg, norm), agg)


def compare_policy_loss(batch: Batch, clip, agg: str, weights: bool) -> dict[str, float]:
    """Our policy loss and its gradient vs core_algos.compute_policy_loss_vanilla, veRL's default
    ("vanilla") policy loss, on the whole mini-batch: the largest differences of the value, the
    gradient and the two clip fractions (inf where ours is NaN)."""
    actor = verl_actor(clip, loss_agg_mode=agg)
    actor.global_batch_info.update(global_batch_info(batch))  # as ppo_loss sets it
    isw = batch.is_weights if weights else None
    ours_lp, theirs_lp = leaf(batch.logp), leaf(batch.logp)
    ours, stats = policy_loss(
        ours_lp, batch.old, batch.adv, batch.mask, our_config(clip, agg=agg), normalizer(batch),
        is_weights=isw,
    )  # fmt: skip
    theirs, metrics = compute_policy_loss_vanilla(
        batch.old, theirs_lp, token_advantages(batch), batch.mask.bool(), agg, actor, isw
    )
    ours.backward()
    theirs.backward()
    gaps = {
        "value": (ours - theirs).detach().abs(),
        "gradient": (ours_lp.grad - theirs_lp.grad).abs().max(),
        "clip_frac": (stats["clip_frac"] - metrics["actor/pg_clipfrac"]).abs(),
        "dual_clip_frac": (stats["dual_clip_frac"] - metrics["actor/pg_clipfrac_lower"]).abs(),
        "gradient_size": ours_lp.grad.abs().sum(),  # not a gap: that there is a gradient
    }
    return {k: float(torch.nan_to_num(v, nan=float("inf"))) for k, v in gaps.items()}


@pytest.mark.parametrize("clip", CLIPS, ids=str)
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("weights", [False, True], ids=["", "is_weights"])
def test_policy_loss_is_verls(batch, clip, agg, weights):
    """vs core_algos.compute_policy_loss_vanilla: clip low/high, dual-clip clip_ratio_c, the
    log-ratio clamp, rollout importance weights; value, gradient and clip fractions."""
    gaps = compare_policy_loss(batch, clip, agg, weights)
    assert gaps["value"] <= TOL and gaps["gradient"] <= TOL < gaps["gradient_size"], gaps
    # the fractions are metrics, which veRL counts in float32 (.float() flags)
    assert gaps["clip_frac"] <= 1e-6 and gaps["dual_clip_frac"] <= 1e-6, gaps


@pytest.mark.parametrize("temperature", [1.0, 0.75])
@pytest.mark.parametrize("seed", SEEDS)
def test_token_logprobs_and_entropy_are_verls(temperature, seed):
    """vs verl.utils.torch_functional.logprobs_from_logits and entropy_from_logits on logits
    scaled as veRL's FSDP engine scales them (_scale_logits_by_temperature): values, and the
    gradients wrt the logits. (Temperatures exact in float32, the dtype veRL carries them in.)"""
    g = torch.Generator().manual_seed(seed)
    rows, resp_len, vocab = 6, 7, 11
    starts = torch.randint(1, 5, (rows,), generator=g)
    width = int(starts.max()) + resp_len
    ids = torch.randint(0, vocab, (rows, width), generator=g)
    logits_ours = leaf(torch.randn(rows, width, vocab, generator=g, dtype=torch.float64) * 3)
    logits_theirs = leaf(logits_ours)

    def model(logits_to_keep: int, **_) -> SimpleNamespace:  # a causal LM's last positions
        return SimpleNamespace(logits=logits_ours[:, width - logits_to_keep :])

    lp, ent = token_logprobs(model, ids, torch.ones_like(ids), starts, resp_len, temperature, True)

    # veRL: the logits at position t predict token t + 1; scaled, then the two functions
    pos = starts.unsqueeze(-1) + torch.arange(resp_len)
    pred = logits_theirs[torch.arange(rows).unsqueeze(-1), pos - 1]
    temp = torch.full((rows, resp_len, 1), temperature, dtype=torch.float32)
    pred = _scale_logits_by_temperature(pred, temp, is_unit_temperature=temperature == 1.0)
    labels = ids[torch.arange(rows).unsqueeze(-1), pos]
    verl_lp, verl_ent = logprobs_from_logits(pred, labels), entropy_from_logits(pred)
    assert_same(lp, verl_lp, "log-probs")
    assert_same(ent, verl_ent, "entropy")
    upstream = torch.rand(2, rows, resp_len, generator=g, dtype=torch.float64)
    (lp * upstream[0] + ent * upstream[1]).sum().backward()
    (verl_lp * upstream[0] + verl_ent * upstream[1]).sum().backward()
    assert_same(logits_ours.grad, logits_theirs.grad, "d/dlogits")


def verl_micro_batch(batch: Batch, rows: slice, logp: torch.Tensor, entropy: torch.Tensor):
    """One micro-batch as ppo_loss receives it: the model's outputs as jagged (nested) tensors
    over each prompt + response (position t holds token t + 1's log-prob), the rest padded."""
    n, prompt_width = rows.stop - rows.start, 4
    prompt_lens = 1 + torch.arange(rows.start, rows.stop) % prompt_width
    lengths = batch.lengths[rows]
    attn = torch.zeros(n, prompt_width + COLS, dtype=torch.long)
    flat_lp, flat_ent = [], []
    for i in range(n):
        p, r = int(prompt_lens[i]), int(lengths[i])
        attn[i, prompt_width - p : prompt_width + r] = 1  # prompts are left-padded
        junk = torch.full((p - 1,), -7.0, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        flat_lp += [junk[0], logp[rows][i, :r], junk[1]]
        flat_ent += [junk[0], entropy[rows][i, :r], junk[1]]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), (prompt_lens + lengths).cumsum(0)])
    outputs = {
        "log_probs": torch.nested.nested_tensor_from_jagged(torch.cat(flat_lp), offsets),
        "entropy": torch.nested.nested_tensor_from_jagged(torch.cat(flat_ent), offsets),
    }
    data = TensorDict(
        {
            "prompts": torch.ones(n, prompt_width, dtype=torch.long),
            "responses": torch.ones(n, COLS, dtype=torch.long),
            "attention_mask": attn,
            "response_mask": batch.mask[rows].bool(),
            "old_log_probs": batch.old[rows],
            "advantages": token_advantages(batch)[rows],
            "ref_log_prob": batch.ref[rows],
        },
        batch_size=[n],
    )
    info = global_batch_info(batch)
    tu.assign_non_tensor(data, **{k: info[k] for k in ("dp_size", "batch_num_tokens")})
    tu.assign_non_tensor(data, global_batch_size=info["global_batch_size"])
    return outputs, data


@pytest.mark.parametrize("clip", CLIPS, ids=str)
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("kl_type", KL_TYPES)
def test_micro_batch_loss_is_verls_ppo_loss(batch, clip, agg, kl_type):
    """vs verl.workers.utils.losses.ppo_loss, the actor loss veRL 0.9.1's engine backpropagates
    per micro-batch: pg - entropy_coeff * entropy + kl_loss_coef * kl (use_kl_loss), each term
    aggregated with the mini-batch's global batch info. Every micro-batch's loss, and the
    mini-batch's gradient wrt the log-probs and the entropy."""
    kl_coef, entropy_coef = 0.05, 0.01
    actor = verl_actor(
        clip,
        loss_agg_mode=agg,
        entropy_coeff=entropy_coef,
        use_kl_loss=True,
        kl_loss_coef=kl_coef,
        kl_loss_type=kl_type,
    )
    cfg = our_config(clip, agg=agg, entropy_coef=entropy_coef, kl_coef=kl_coef, kl_type=kl_type)
    ours_in = leaf(batch.logp), leaf(batch.entropy)
    theirs_in = leaf(batch.logp), leaf(batch.entropy)
    ours_total = theirs_total = 0.0
    for rows in MICRO_BATCHES:
        ours, stats = policy_loss(
            ours_in[0][rows], batch.old[rows], batch.adv[rows], batch.mask[rows], cfg,
            normalizer(batch), ref_logp=batch.ref[rows], entropy=ours_in[1][rows],
        )  # fmt: skip
        theirs, metrics = ppo_loss(actor, *verl_micro_batch(batch, rows, *theirs_in))
        assert_same(ours, theirs, f"loss of rows {rows}")
        kl = torch.tensor(metrics["kl_loss"].aggregate(), dtype=torch.float64)
        assert_same(stats["kl"], kl, f"kl term of rows {rows}")
        ours_total, theirs_total = ours_total + ours, theirs_total + theirs
    ours_total.backward()
    theirs_total.backward()
    for name, a, b in zip(("d/dlogp", "d/dentropy"), ours_in, theirs_in, strict=True):
        assert_same(a.grad, b.grad, name)
        assert a.grad.abs().sum() > 0, name


@pytest.mark.parametrize("broken", ["dual-clip removed", "log-ratio clamp removed"])
@pytest.mark.parametrize("seed", SEEDS)
def test_a_broken_loss_fails_the_comparison(monkeypatch, broken, seed):
    """The comparison is not vacuous: with dual-clip removed (c -> 1e12), or the +-20 clamp of
    the log-ratio, our policy loss differs from veRL's by far more than the tolerance (the
    clamp shows in the gradient: exp(800) overflows)."""
    batch = random_batch(seed)
    if broken == "dual-clip removed":
        original = ours_mod.pg_token_losses

        def without_dual_clip(logp, old, adv, cfg):
            return original(logp, old, adv, cfg.model_copy(update={"dual_clip": 1e12}))

        monkeypatch.setattr(ours_mod, "pg_token_losses", without_dual_clip)
    else:
        monkeypatch.setattr(ours_mod, "LOG_RATIO_CLAMP", float("inf"))
    gaps = compare_policy_loss(batch, CLIPS[0], "token-mean", False)
    assert max(gaps["value"], gaps["gradient"]) > 1e6 * TOL, gaps

"""The GRPO loss with the meaning of veRL 0.9.1's (verl/trainer/ppo/core_algos.py, composed as
verl/workers/utils/losses.py:ppo_loss does): group-normalised advantages, the clipped per-token
policy loss with dual-clip, KL to a reference policy, and loss aggregation. tests/verl proves each
function equal to veRL's own, value and gradient, in float64.

The aggregation's normalisers are veRL's "global batch info": fixed per mini-batch before it is
split, so splitting a mini-batch into micro-batches never changes the gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proactive_rl.stages.grpo.config import LossConfig

# veRL clamps the log-ratio before exp so a stale token cannot overflow the ratio
LOG_RATIO_CLAMP = 20.0
# veRL's kl_loss_type names -> the estimator they select (a trailing "+" is handled apart)
KL_ESTIMATORS = {
    "kl": "k1",
    "k1": "k1",
    "abs": "abs",
    "mse": "k2",
    "k2": "k2",
    "low_var_kl": "k3",
    "k3": "k3",
}


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale: str, eps: float
) -> tuple[torch.Tensor, float]:
    """A = r - mean_group(r), divided by (std_group + eps) for scale="group_std" (unbiased std,
    as veRL's compute_grpo_outcome_advantage). A group of one has mean 0 and std 1, and those
    two are default-dtype (float32) scalars as in veRL, so its 1 + eps rounds the same way.
    Returns (advantages, fraction of groups whose rewards all tie: no learning signal)."""
    adv = torch.empty_like(rewards)
    ties = 0
    unique = torch.unique(group_ids)
    for gid in unique:
        idx = group_ids == gid
        r = rewards[idx]
        if r.numel() == 1:
            mean, std = torch.tensor(0.0), torch.tensor(1.0)
        else:
            mean, std = r.mean(), r.std(unbiased=True)
        ties += int(r.numel() > 1 and bool(torch.all(r == r[0])))
        a = r - mean
        adv[idx] = a / (std + eps) if scale == "group_std" else a
    return adv, ties / max(len(unique), 1)


def _kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "abs":
        return (logp - ref_logp).abs()
    if estimator == "k2":
        return 0.5 * (logp - ref_logp).square()
    # k3 = r - log r - 1 with r = ref/pi; both clamps are veRL's, for numerical safety
    log_r = torch.clamp(ref_logp - logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(log_r) - log_r - 1.0, -10.0, 10.0)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from samples of pi, by veRL's kl_loss_type names:
    k1 (kl) logp - ref; abs |logp - ref|; k2 (mse) (logp - ref)^2 / 2; k3 (low_var_kl)
    exp(ref - logp) - (ref - logp) - 1. A trailing "+" keeps the estimate's value but takes the
    gradient of k2, the one whose expectation is the gradient of the KL (straight-through)."""
    value = _kl_estimate(logp, ref_logp, KL_ESTIMATORS[kind.removesuffix("+")])
    if not kind.endswith("+"):
        return value
    k2 = 0.5 * (logp - ref_logp).square()
    return value.detach() + (k2 - k2.detach())


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of values * mask; a masked-out value never counts, even an inf or NaN."""
    kept = torch.where(mask.bool(), values, 0.0) * mask
    return kept.sum() if dim is None else kept.sum(dim)


@dataclass
class Normalizer:
    """Mini-batch constants the aggregation divides by (computed before micro-batching): veRL's
    global batch info (batch_num_tokens, global_batch_size, loss_scale_factor)."""

    tokens: float  # response tokens in the mini-batch (after masking)
    sequences: float  # responses in the mini-batch (less those mask_truncated drops)
    max_len: float  # seq-mean-token-sum-norm's divisor: loss_scale_factor, else max_new_tokens


def aggregate(values: torch.Tensor, mask: torch.Tensor, agg: str, norm: Normalizer) -> torch.Tensor:
    """Reduce per-token values [B, T] of one micro-batch to its share of the mini-batch loss,
    as veRL's agg_loss given the mini-batch's global batch info. A mini-batch with no tokens or
    no responses left gives 0, not veRL's NaN (only mask_truncated can empty one here)."""
    if agg == "token-mean":
        return masked_sum(values, mask) / max(norm.tokens, 1.0)
    if agg == "token-sum":
        return masked_sum(values, mask)
    if agg in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        loss = masked_sum(values, mask, -1).sum() / max(norm.sequences, 1.0)
        return loss / norm.max_len if agg == "seq-mean-token-sum-norm" else loss
    if agg == "seq-mean-token-mean":
        # veRL's + 1e-8 (in the mask's dtype); a fully masked response adds 0
        per_seq = masked_sum(values, mask, -1) / (mask.sum(-1) + 1e-8)
        return per_seq.sum() / max(norm.sequences, 1.0)
    raise ValueError(f"unknown aggregation {agg!r}")


def pg_token_losses(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """veRL's clipped per-token policy loss (compute_policy_loss_vanilla) before aggregation:
    max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)), and for A < 0 also at most -A c
    (dual-clip), with r = exp(clamp(logp - old_logp, +-20)). Returns it and per-token flags."""
    ratio = torch.exp(torch.clamp(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high)
    per_token = torch.maximum(unclipped, clipped)
    cap = -adv * cfg.dual_clip
    flags = {
        "ratio": ratio.detach(),
        "clip_frac": (clipped > unclipped).to(logp.dtype),
        "dual_clip_frac": ((per_token > cap) & (adv < 0)).to(logp.dtype),
    }
    return torch.where(adv < 0, torch.minimum(per_token, cap), per_token), flags


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: LossConfig,
    norm: Normalizer,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one micro-batch as veRL's ppo_loss composes it:
    pg - entropy_coef * entropy + kl_coef * kl, each aggregated with cfg.agg.

    logp/old_logp/ref_logp/entropy/mask: [B, T] over response tokens; advantages: [B] (or
    [B, T]). is_weights: optional truncated importance weights [B, T] (behaviour-policy
    correction) on the policy-gradient term only, treated as constants.
    """
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    per_token, flags = pg_token_losses(logp, old_logp, adv.expand_as(logp), cfg)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    loss = aggregate(per_token, mask, cfg.agg, norm)
    stats = {"pg_loss": loss.detach()}
    for name in ("clip_frac", "dual_clip_frac"):
        stats[name] = aggregate(flags[name], mask, "token-mean", norm).detach()
    stats["ratio_mean"] = aggregate(flags["ratio"], mask, "token-mean", norm)
    if entropy is not None:
        ent = aggregate(entropy, mask, cfg.agg, norm)
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * ent
        stats["entropy"] = ent.detach()
    if ref_logp is not None and cfg.kl_coef > 0:
        kl = aggregate(kl_penalty(logp, ref_logp, cfg.kl_type), mask, cfg.agg, norm)
        loss = loss + kl * cfg.kl_coef
        stats["kl"] = kl.detach()
    return loss, stats


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    response_len: int,
    temperature: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log p of each response token under softmax(logits / temperature).

    Sequences are right-padded rows of prompt+response; response_start[b] is where row b's
    response begins. Returns [B, response_len] and the entropy; beyond a row's response they
    hold what its padding scores (the loss masks them).
    """
    width = input_ids.shape[1]
    # the logits at position t predict token t + 1, so only positions from the earliest
    # response start - 1 on are needed: the model computes logits for those alone (TRL's
    # logits_to_keep), sparing the output layer, a fifth of SmolLM2's FLOPs, on the prompts
    first = int((response_start - 1).clamp(min=0).min())
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=width - first)
    batch = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(-1)
    offs = torch.arange(response_len, device=input_ids.device).unsqueeze(0)
    target_pos = (response_start.unsqueeze(-1) + offs).clamp(max=width - 1)
    pred = out.logits[batch, (target_pos - 1).clamp(min=0) - first]
    # at least float32 for the softmax (bf16 logits lose too much), never below the model's;
    # scaled after the gather, so only the response positions are copied
    pred = pred.to(torch.promote_types(pred.dtype, torch.float32)) / temperature
    logprobs = torch.log_softmax(pred, dim=-1)
    targets = input_ids[batch, target_pos]
    chosen = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        entropy = -(logprobs.exp() * logprobs).sum(-1)
    return chosen, entropy

"""The GRPO update, written from the reference definitions (../docs/contract.md cites them):
group-normalised advantages, the clipped per-token policy loss, KL to a reference policy, and
loss aggregation whose normalisers are fixed per mini-batch, so splitting a mini-batch into
micro-batches never changes the gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proactive_rl.grpo.config import LossConfig


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale: str, eps: float
) -> tuple[torch.Tensor, float]:
    """A = r - mean_group(r), divided by (std_group + eps) for scale="group_std" (unbiased std,
    as veRL; a group of one has mean 0 and std 1). Returns (advantages, fraction of groups whose
    rewards all tie: those carry no learning signal)."""
    adv = torch.empty_like(rewards)
    ties = 0
    unique = torch.unique(group_ids)
    for gid in unique:
        idx = group_ids == gid
        r = rewards[idx]
        if r.numel() == 1:
            mean, std = torch.zeros_like(r[0]), torch.ones_like(r[0])
        else:
            mean, std = r.mean(), r.std(unbiased=True)
        ties += int(r.numel() > 1 and bool(torch.all(r == r[0])))
        a = r - mean
        adv[idx] = a / (std + eps) if scale == "group_std" else a
    return adv, ties / max(len(unique), 1)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from samples of pi."""
    if kind == "k1":
        return logp - ref_logp
    if kind == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    # low_var_kl (k3), clamped as veRL does for numerical safety
    d = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)


@dataclass
class Normalizer:
    """Mini-batch constants the aggregation divides by (computed before micro-batching)."""

    tokens: float  # response tokens in the mini-batch (after masking)
    sequences: float  # responses in the mini-batch
    max_len: float  # longest response allowed (max_new_tokens), for seq-mean-token-sum-norm


def aggregate(values: torch.Tensor, mask: torch.Tensor, agg: str, norm: Normalizer) -> torch.Tensor:
    """Reduce per-token values [B, T] of one micro-batch to its share of the mini-batch loss."""
    if agg == "token-mean":
        return (values * mask).sum() / max(norm.tokens, 1.0)
    if agg == "seq-mean-token-mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.sum() / max(norm.sequences, 1.0)
    if agg == "seq-mean-token-sum-norm":
        return (values * mask).sum() / (max(norm.sequences, 1.0) * norm.max_len)
    raise ValueError(f"unknown aggregation {agg!r}")


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
    """Clipped policy-gradient loss for one micro-batch.

    logp/old_logp/ref_logp/entropy/mask: [B, T] over response tokens; advantages: [B].
    is_weights: optional truncated importance weights [B, T] (behaviour-policy correction),
    treated as constants.
    """
    adv = advantages.unsqueeze(-1).expand_as(logp)
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high)
    per_token = torch.maximum(unclipped, clipped)
    clip_frac = (clipped > unclipped).float()
    if cfg.dual_clip is not None:
        # for A < 0 the loss is also capped at -c * A, so very large ratios can't explode it
        capped = torch.minimum(per_token, -adv * cfg.dual_clip)
        per_token = torch.where(adv < 0, capped, per_token)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    loss = aggregate(per_token, mask, cfg.agg, norm)
    stats = {
        "pg_loss": loss.detach(),
        "clip_frac": aggregate(clip_frac, mask, "token-mean", norm).detach(),
        "ratio_mean": aggregate(ratio.detach(), mask, "token-mean", norm),
    }
    if ref_logp is not None and cfg.kl_coef > 0:
        kl = aggregate(kl_penalty(logp, ref_logp, cfg.kl_type), mask, cfg.agg, norm)
        loss = loss + cfg.kl_coef * kl
        stats["kl"] = kl.detach()
    if entropy is not None:
        ent = aggregate(entropy, mask, cfg.agg, norm)
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * ent
        stats["entropy"] = ent.detach()
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
    response begins. Returns [B, response_len] (zeros beyond each response) and the entropy.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    # at least float32 for the softmax (bf16 logits lose too much), never below the model's
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    batch = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(-1)
    offs = torch.arange(response_len, device=input_ids.device).unsqueeze(0)
    target_pos = (response_start.unsqueeze(-1) + offs).clamp(max=input_ids.shape[1] - 1)
    # the logits at position t predict token t + 1
    pred = logits[batch, (target_pos - 1).clamp(min=0)]
    logprobs = torch.log_softmax(pred, dim=-1)
    targets = input_ids[batch, target_pos]
    chosen = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        entropy = -(logprobs.exp() * logprobs).sum(-1)
    return chosen, entropy

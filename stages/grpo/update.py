"""One GRPO step over one RL step's rollouts: mini-batches (optimizer steps) of micro-batches
(gradient accumulation). The loss normalisers are fixed per mini-batch before it is split, so
the gradient does not depend on the micro-batch size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from proactive_rl.grpo.config import GrpoConfig, LossConfig
from proactive_rl.grpo.loss import Normalizer, group_advantages, policy_loss, token_logprobs


@dataclass
class Batch:
    """Right-padded prompt+response rows on the device; response_start[b] is where row b's
    response begins, mask[b, t] is 1 on its response tokens."""

    ids: torch.Tensor
    attn: torch.Tensor
    response_start: torch.Tensor
    mask: torch.Tensor
    response_len: int


def collate(rows: list[dict[str, Any]], device: torch.device, pad_id: int = 0) -> Batch:
    seqs = [list(r["prompt_ids"]) + list(r["response_ids"]) for r in rows]
    width = max(len(s) for s in seqs)
    resp_len = max(len(r["response_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), resp_len))
    for i, (seq, row) in enumerate(zip(seqs, rows, strict=True)):
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        mask[i, : len(row["response_ids"])] = 1.0
    start = torch.tensor([len(r["prompt_ids"]) for r in rows])
    return Batch(ids.to(device), attn.to(device), start.to(device), mask.to(device), resp_len)


def pad_rows(values: list[torch.Tensor], width: int, device: torch.device) -> torch.Tensor:
    """Stack 1-D per-response tensors into [B, width], zero-padded."""
    out = torch.zeros((len(values), width), dtype=values[0].dtype)
    for i, v in enumerate(values):
        out[i, : v.shape[0]] = v
    return out.to(device)


def logprobs_of(
    model: torch.nn.Module,
    rows: list[dict[str, Any]],
    temperature: float,
    micro_batch_size: int,
    device: torch.device,
) -> list[torch.Tensor]:
    """Per-response token logprobs under `model`, without gradients (1-D tensors on the CPU)."""
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for i in range(0, len(rows), micro_batch_size):
            chunk = rows[i : i + micro_batch_size]
            b = collate(chunk, device)
            lp, _ = token_logprobs(
                model, b.ids, b.attn, b.response_start, b.response_len, temperature
            )
            out += [lp[k, : len(r["response_ids"])].cpu() for k, r in enumerate(chunk)]
    return out


def importance_weights(
    old: list[torch.Tensor], sampler: list[torch.Tensor], cfg: LossConfig
) -> list[torch.Tensor]:
    """Truncated importance weights min(exp(logp_old - logp_sampler), C), per token or per
    response (the response's summed log-ratio), correcting for a sampler that is not exactly
    the policy being updated (an older version, or another engine's numerics)."""
    weights = []
    for o, s in zip(old, sampler, strict=True):
        log_ratio = o.double() - s.double()
        if cfg.is_correction == "sequence":
            log_ratio = log_ratio.sum().expand_as(log_ratio)
        weights.append(torch.exp(log_ratio).clamp(max=cfg.is_threshold).float())
    return weights


def accumulate_gradients(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    rows: list[dict[str, Any]],
    advantages: torch.Tensor,
    keep: torch.Tensor,
    cfg: LossConfig,
    norm: Normalizer,
    temperature: float,
    micro_batch_size: int,
    device: torch.device,
    old: list[torch.Tensor] | None = None,
    is_weights: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Backward the loss of one mini-batch, micro-batch by micro-batch, into the .grad fields.

    `old` are the logprobs of the policy before this step's first update (None: the current
    policy, i.e. ratio 1 in value); `keep` zeroes responses excluded from the loss. Returns the
    mini-batch's loss statistics (each micro-batch contributes its share)."""
    totals: dict[str, float] = {}
    for i in range(0, len(rows), micro_batch_size):
        idx = list(range(i, min(i + micro_batch_size, len(rows))))
        chunk = [rows[j] for j in idx]
        b = collate(chunk, device)
        mask = b.mask * keep[idx].unsqueeze(-1).to(device)
        logp, entropy = token_logprobs(
            model, b.ids, b.attn, b.response_start, b.response_len, temperature, with_entropy=True
        )
        old_logp = (
            logp.detach()
            if old is None
            else pad_rows([old[j] for j in idx], b.response_len, device)
        )
        ref = None
        if ref_model is not None and cfg.kl_coef > 0:
            with torch.no_grad():
                ref, _ = token_logprobs(
                    ref_model, b.ids, b.attn, b.response_start, b.response_len, temperature
                )
        weights = None
        if is_weights is not None:
            weights = pad_rows([is_weights[j] for j in idx], b.response_len, device)
        loss, stats = policy_loss(
            logp,
            old_logp,
            advantages[idx].to(device),
            mask,
            cfg,
            norm,
            ref_logp=ref,
            entropy=entropy,
            is_weights=weights,
        )
        loss.backward()
        for name, value in stats.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def train_step(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rows: list[dict[str, Any]],
    config: GrpoConfig,
    temperature: float,
    max_new_tokens: int,
    device: torch.device,
    n: int,
) -> dict[str, float]:
    cfg = config.loss
    rewards = torch.tensor([r["reward"] for r in rows], dtype=torch.float64)
    group_ids = torch.tensor([r["group_id"] for r in rows])
    advantages, tie_frac = group_advantages(rewards, group_ids, cfg.scale_advantages, cfg.adv_eps)
    advantages = advantages.float()
    keep = torch.tensor(
        [0.0 if cfg.mask_truncated and r["finish_reason"] == "length" else 1.0 for r in rows]
    )
    sampler = [torch.tensor(r["sampling_logprobs"], dtype=torch.float32) for r in rows]

    # Groups stay whole inside a mini-batch; rows arrive ordered by group.
    per_mini = config.mini_batch_prompts * n
    minis = [list(range(i, min(i + per_mini, len(rows)))) for i in range(0, len(rows), per_mini)]
    # pi_old must be frozen before the first update when a step makes several updates, and is
    # what the importance weights compare the sampler with.
    need_old = config.ppo_epochs > 1 or len(minis) > 1 or cfg.is_correction != "none"
    old = (
        logprobs_of(model, rows, temperature, config.micro_batch_size, device) if need_old else None
    )
    weights = (
        importance_weights(old, sampler, cfg)
        if old is not None and (cfg.is_correction != "none")
        else None
    )

    totals: dict[str, float] = {}
    grad_norms = []
    for _ in range(config.ppo_epochs):
        for mini in minis:
            norm = Normalizer(
                tokens=float(sum(keep[j] * len(rows[j]["response_ids"]) for j in mini)),
                sequences=float(sum(keep[j] for j in mini)),
                max_len=float(max_new_tokens),
            )
            optimizer.zero_grad(set_to_none=True)
            stats = accumulate_gradients(
                model,
                ref_model,
                [rows[j] for j in mini],
                advantages[mini],
                keep[mini],
                cfg,
                norm,
                temperature,
                config.micro_batch_size,
                device,
                old=[old[j] for j in mini] if old is not None else None,
                is_weights=[weights[j] for j in mini] if weights is not None else None,
            )
            for name, value in stats.items():
                totals[f"loss/{name}"] = totals.get(f"loss/{name}", 0.0) + value
            grad_norms.append(
                float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            )
            optimizer.step()
            scheduler.step()

    updates = config.ppo_epochs * len(minis)
    lengths = [len(r["response_ids"]) for r in rows]
    out = {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std(unbiased=False)),
        "reward/group_acc": part_mean(rows, "correct"),
        "reward/proactive_rate": part_mean(rows, "proactive"),
        "reward/think_rate": part_mean(rows, "think"),
        "reward/tied_group_frac": tie_frac,
        "adv/abs_mean": float(advantages.abs().mean()),
        "response/length_mean": sum(lengths) / len(lengths),
        "response/truncated_frac": sum(r["finish_reason"] == "length" for r in rows) / len(rows),
        "opt/grad_norm": sum(grad_norms) / len(grad_norms),
        "opt/lr": scheduler.get_last_lr()[0],
        "opt/updates": updates,
        **{name: value / updates for name, value in totals.items()},
    }
    if old is not None:
        diffs = torch.cat([(o - s).abs() for o, s in zip(old, sampler, strict=True)])
        out["rollout/sampler_logprob_abs_diff"] = float(diffs.mean())
    if weights is not None:
        flat = torch.cat(weights)
        out.update(
            {
                "is/weight_mean": float(flat.mean()),
                "is/weight_min": float(flat.min()),
                "is/weight_max": float(flat.max()),
                "is/truncated_frac": float((flat >= cfg.is_threshold).float().mean()),
            }
        )
    return out


def part_mean(rows: list[dict[str, Any]], name: str) -> float:
    """Mean of one reward part over the responses that report it (NaN if none does)."""
    values = [dict(r["reward_parts"] or {}).get(name) for r in rows]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")

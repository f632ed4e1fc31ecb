"""One GRPO step over one RL step's rollouts: mini-batches (optimizer steps) of micro-batches
(gradient accumulation), with the loss normalisers fixed per mini-batch."""

from __future__ import annotations

from typing import Any

import torch

from proactive_rl.grpo.config import GrpoConfig
from proactive_rl.grpo.loss import Normalizer, group_advantages, policy_loss, token_logprobs


def collate(rows: list[dict[str, Any]], pad_id: int, device: torch.device) -> dict[str, Any]:
    """Right-padded prompt+response rows and where each response starts."""
    seqs = [list(r["prompt_ids"]) + list(r["response_ids"]) for r in rows]
    width = max(len(s) for s in seqs)
    resp_len = max(len(r["response_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), resp_len))
    sampling = torch.zeros((len(rows), resp_len))
    for i, (seq, row) in enumerate(zip(seqs, rows, strict=True)):
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        k = len(row["response_ids"])
        mask[i, :k] = 1.0
        sampling[i, :k] = torch.tensor(row["sampling_logprobs"], dtype=torch.float32)
    start = torch.tensor([len(r["prompt_ids"]) for r in rows])
    return {
        "ids": ids.to(device),
        "attn": attn.to(device),
        "start": start.to(device),
        "mask": mask.to(device),
        "sampling": sampling.to(device),
        "resp_len": resp_len,
    }


def train_step(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rows: list[dict[str, Any]],
    config: GrpoConfig,
    n: int,
    temperature: float,
    max_new_tokens: int,
    device: torch.device,
) -> dict[str, float]:
    cfg = config.loss
    pad_id = 0
    rewards = torch.tensor([r["reward"] for r in rows], dtype=torch.float64)
    group_ids = torch.tensor([r["group_id"] for r in rows])
    advantages, tie_frac = group_advantages(rewards, group_ids, cfg.scale_advantages, cfg.adv_eps)
    advantages = advantages.float()
    keep = torch.tensor(
        [0.0 if cfg.mask_truncated and r["finish_reason"] == "length" else 1.0 for r in rows]
    )

    # Groups stay whole inside a mini-batch; rows arrive ordered by group.
    per_mini = config.mini_batch_prompts * n
    minis = [list(range(i, min(i + per_mini, len(rows)))) for i in range(0, len(rows), per_mini)]
    # Old logprobs are needed before the first update only when a step makes several updates.
    need_old = config.ppo_epochs > 1 or len(minis) > 1
    old_logp: dict[int, torch.Tensor] = {}
    if need_old:
        with torch.no_grad():
            for i in range(0, len(rows), config.micro_batch_size):
                idx = list(range(i, min(i + config.micro_batch_size, len(rows))))
                b = collate([rows[j] for j in idx], pad_id, device)
                lp, _ = token_logprobs(
                    model, b["ids"], b["attn"], b["start"], b["resp_len"], temperature
                )
                for k, j in enumerate(idx):
                    old_logp[j] = lp[k, : len(rows[j]["response_ids"])]

    # Every loss statistic is a micro-batch's share of its mini-batch value (the normalisers are
    # mini-batch wide), so summing over micro-batches and averaging over updates is exact.
    totals: dict[str, float] = {}
    grad_norms = []
    sampler_diff, sampler_tokens = 0.0, 0.0

    for _ in range(config.ppo_epochs):
        for mini in minis:
            masks = [keep[j] * len(rows[j]["response_ids"]) for j in mini]
            norm = Normalizer(
                tokens=float(sum(masks)),
                sequences=float(sum(keep[j] for j in mini)),
                max_len=float(max_new_tokens),
            )
            optimizer.zero_grad(set_to_none=True)
            for i in range(0, len(mini), config.micro_batch_size):
                idx = mini[i : i + config.micro_batch_size]
                b = collate([rows[j] for j in idx], pad_id, device)
                mask = b["mask"] * keep[idx].unsqueeze(-1).to(device)
                logp, entropy = token_logprobs(
                    model,
                    b["ids"],
                    b["attn"],
                    b["start"],
                    b["resp_len"],
                    temperature,
                    with_entropy=True,
                )
                if need_old:
                    old = torch.zeros_like(logp)
                    for k, j in enumerate(idx):
                        old[k, : old_logp[j].shape[0]] = old_logp[j]
                else:
                    old = logp.detach()
                ref = None
                if ref_model is not None:
                    with torch.no_grad():
                        ref, _ = token_logprobs(
                            ref_model, b["ids"], b["attn"], b["start"], b["resp_len"], temperature
                        )
                loss, stats = policy_loss(
                    logp,
                    old,
                    advantages[idx].to(device),
                    mask,
                    cfg,
                    norm,
                    ref_logp=ref,
                    entropy=entropy,
                )
                loss.backward()
                for name, value in stats.items():
                    totals[f"loss/{name}"] = totals.get(f"loss/{name}", 0.0) + float(value)
                sampler_diff += float(((old - b["sampling"]).abs() * b["mask"]).sum())
                sampler_tokens += float(b["mask"].sum())
            grad_norms.append(
                float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            )
            optimizer.step()
            scheduler.step()

    updates = config.ppo_epochs * len(minis)
    lengths = [len(r["response_ids"]) for r in rows]
    parts = [r["reward_parts"] or {} for r in rows]

    def part_mean(name: str) -> float:
        vals = [dict(p).get(name) for p in parts]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    out = {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std(unbiased=False)),
        "reward/group_acc": part_mean("correct"),
        "reward/proactive_rate": part_mean("proactive"),
        "reward/think_rate": part_mean("think"),
        "reward/tied_group_frac": tie_frac,
        "adv/abs_mean": float(advantages.abs().mean()),
        "response/length_mean": sum(lengths) / len(lengths),
        "response/truncated_frac": sum(r["finish_reason"] == "length" for r in rows) / len(rows),
        "opt/grad_norm": sum(grad_norms) / len(grad_norms),
        "opt/lr": scheduler.get_last_lr()[0],
        "opt/updates": updates,
        "rollout/sampler_logprob_abs_diff": sampler_diff / max(sampler_tokens, 1.0),
    }
    out.update({name: value / updates for name, value in totals.items()})
    return out

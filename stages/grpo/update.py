"""One GRPO step over one RL step's rollouts: mini-batches (optimizer steps) of micro-batches
(gradient accumulation). The loss normalisers are fixed per mini-batch before it is split, so
the gradient does not depend on the micro-batch size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from proactive_rl.engine.parallel import Parallel, split_micro
from proactive_rl.stages.grpo.config import GrpoConfig, LossConfig
from proactive_rl.stages.grpo.loss import Normalizer, group_advantages, policy_loss, token_logprobs


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
    micro_batches: int | None = None,
    max_tokens: int | None = None,
) -> list[torch.Tensor]:
    """Per-response token logprobs under `model`, without gradients (1-D tensors on the CPU),
    in micro-batches of `micro_batch_size` rows or, with `max_tokens`, of that token budget.
    `micro_batches` > the rows' own count adds forward passes whose results are dropped: under
    ZeRO-3 every process must run as many forwards as the others."""
    out: list[torch.Tensor] = []
    splits = split_micro(rows, micro_batch_size, max_tokens)
    with torch.no_grad():
        for k in range(max(micro_batches or 0, len(splits))):
            chunk = [rows[j] for j in splits[k]] if k < len(splits) else rows[:1]
            b = collate(chunk, device)
            lp, _ = token_logprobs(
                model, b.ids, b.attn, b.response_start, b.response_len, temperature
            )
            if k < len(splits):
                out += [lp[i, : len(r["response_ids"])].cpu() for i, r in enumerate(chunk)]
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
    par: Parallel | None = None,
    micro_batches: int | None = None,
    micro_batch_tokens: int | None = None,
) -> dict[str, float]:
    """Backward the loss of one mini-batch, micro-batch by micro-batch (`micro_batch_size`
    rows, or with `micro_batch_tokens` that token budget: split_micro), into the .grad fields.

    `old` are the logprobs of the policy before this step's first update (None: the current
    policy, i.e. ratio 1 in value); `keep` zeroes responses excluded from the loss. With several
    processes (`par`), `rows` are this process's share and `norm` counts the whole mini-batch;
    `micro_batches` pads with zero-loss passes so every process runs as many as the others.
    Returns the mini-batch's loss statistics (each micro-batch contributes its share)."""
    totals: dict[str, float] = {}
    splits = split_micro(rows, micro_batch_size, micro_batch_tokens)
    count = max(micro_batches or 0, len(splits))
    for k in range(count):
        padding = k >= len(splits)
        idx = [0] if padding else splits[k]
        chunk = [rows[j] for j in idx]
        b = collate(chunk, device)
        mask = b.mask * (0.0 if padding else keep[idx].unsqueeze(-1).to(device))
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
        if par is None:
            loss.backward()
        else:
            par.backward(model, loss, last=k == count - 1)
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
    par: Parallel | None = None,
    update_actor: bool = True,
) -> dict[str, float]:
    """One RL step. `model` is what forward passes go through (the DDP or DeepSpeed wrapper
    when `par` spans several processes); every process gets all `rows` and trains its share.
    Without `update_actor` (veRL's critic warm-up) the step is measured but trains nothing."""
    par = par or Parallel("single", device=device)
    optimizer.zero_grad(set_to_none=True)
    cfg = config.loss
    micro, micro_tokens = config.micro_batch_size, config.micro_batch_tokens
    lp_micro = config.log_prob_micro_batch_size or micro
    lp_tokens = config.log_prob_micro_batch_tokens
    rewards = torch.tensor([r["reward"] for r in rows], dtype=torch.float64)
    group_ids = torch.tensor([r["group_id"] for r in rows])
    # advantages need whole groups, so every process computes them for the whole step
    advantages, tie_frac = group_advantages(rewards, group_ids, cfg.scale_advantages, cfg.adv_eps)
    advantages = advantages.float()
    keep = torch.tensor(
        [0.0 if cfg.mask_truncated and r["finish_reason"] == "length" else 1.0 for r in rows]
    )
    sampler = [torch.tensor(r["sampling_logprobs"], dtype=torch.float32) for r in rows]

    # Groups stay whole inside a mini-batch; rows arrive ordered by group.
    per_mini = config.mini_batch_prompts * n
    minis = [list(range(i, min(i + per_mini, len(rows)))) for i in range(0, len(rows), per_mini)]
    # This process's rows of each mini-batch (a process without a group gets one row that
    # counts for nothing, so it still joins the collective passes), and the pass counts to pad
    # to: training micro-batches and pi_old forwards.
    shares = []
    for mini in minis:
        mine = par.shard(rows, mini)
        passes = par.micro_batches(rows, mini, micro, micro_tokens)
        lp_passes = par.micro_batches(rows, mini, lp_micro, lp_tokens)
        shares.append((mine or mini[:1], bool(mine), passes, lp_passes))

    # pi_old is frozen before the first update, as veRL recomputes old_log_prob every step: the
    # ratio's denominator when a step makes several updates, what the importance weights compare
    # the sampler with, and the sampler/trainer mismatch metric. One no-grad forward a response.
    old: dict[int, torch.Tensor] = {}
    for mine, _, _, lp_passes in shares:
        mine_rows = [rows[j] for j in mine]
        lps = logprobs_of(model, mine_rows, temperature, lp_micro, device, lp_passes, lp_tokens)
        old.update(zip(mine, lps, strict=True))
    weights: dict[int, torch.Tensor] = {}
    if cfg.is_correction != "none":
        order = sorted(old)
        computed = importance_weights([old[j] for j in order], [sampler[j] for j in order], cfg)
        weights = dict(zip(order, computed, strict=True))

    totals: dict[str, float] = {}
    grad_norms = []
    lr = scheduler.get_last_lr()[0]  # every update of this RL step trains at this rate
    for _ in range(config.ppo_epochs if update_actor else 0):
        for mini, (mine, real, passes, _) in zip(minis, shares, strict=True):
            norm = Normalizer(
                tokens=float(sum(keep[j] * len(rows[j]["response_ids"]) for j in mini)),
                sequences=float(sum(keep[j] for j in mini)),
                max_len=float(cfg.loss_scale_factor or max_new_tokens),
            )
            stats = accumulate_gradients(
                model,
                ref_model,
                [rows[j] for j in mine],
                advantages[mine],
                keep[mine] if real else torch.zeros(len(mine)),
                cfg,
                norm,
                temperature,
                micro,
                device,
                old=[old[j] for j in mine] if old else None,
                is_weights=[weights[j] for j in mine] if weights else None,
                par=par,
                micro_batches=passes,
                micro_batch_tokens=micro_tokens,
            )
            for name, value in stats.items():
                totals[f"loss/{name}"] = totals.get(f"loss/{name}", 0.0) + value
            grad_norms.append(par.step(model, optimizer, config.grad_clip))
    if update_actor:
        scheduler.step()  # once per RL step, as veRL: warm-up and decay count RL steps
    totals = par.reduce(totals)  # each process holds its share of every mini-batch statistic

    updates = config.ppo_epochs * len(minis) if update_actor else 0
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
        "opt/grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
        "opt/lr": lr if update_actor else 0.0,
        "opt/updates": updates,
        **{name: value / updates for name, value in totals.items()},
    }
    real_rows = [j for mine, real, *_ in shares if real for j in mine]
    if old:
        diffs = torch.cat([(old[j] - sampler[j]).abs() for j in real_rows] or [torch.zeros(0)])
        summed = par.reduce({"sum": float(diffs.sum()), "count": float(diffs.numel())})
        out["rollout/sampler_logprob_abs_diff"] = summed["sum"] / max(summed["count"], 1.0)
    if weights:
        flat = torch.cat([weights[j] for j in real_rows] or [torch.zeros(0)])
        summed = par.reduce(
            {
                "sum": float(flat.sum()),
                "count": float(flat.numel()),
                "truncated": float((flat >= cfg.is_threshold).sum()),
            }
        )
        low = par.reduce({"v": float(flat.min()) if flat.numel() else float("inf")}, "min")["v"]
        high = par.reduce({"v": float(flat.max()) if flat.numel() else float("-inf")}, "max")["v"]
        count = max(summed["count"], 1.0)
        out.update(
            {
                "is/weight_mean": summed["sum"] / count,
                "is/weight_min": low,
                "is/weight_max": high,
                "is/truncated_frac": summed["truncated"] / count,
            }
        )
    return out


def part_mean(rows: list[dict[str, Any]], name: str) -> float:
    """Mean of one reward part over the responses that report it (NaN if none does)."""
    values = [dict(r["reward_parts"] or {}).get(name) for r in rows]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")

"""One GRPO step over one RL step's rollouts: mini-batches (optimizer steps) of micro-batches
(gradient accumulation). The loss normalisers are fixed per mini-batch before it is split, so
the gradient does not depend on the micro-batch size."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proactive_rl.engine.parallel import Parallel, split_micro
from proactive_rl.shared.schemas import RolloutRow
from proactive_rl.stages.grpo.batches import MicroSplit, MiniBatch, plan_mini_batches
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


def collate(rows: list[RolloutRow], device: torch.device, pad_id: int = 0) -> Batch:
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
    rows: list[RolloutRow],
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


@dataclass(frozen=True)
class Policies:
    """The policy trained (what forward passes go through: the DDP or DeepSpeed wrapper when
    several processes train), the KL reference (None: no KL term), and how both score a
    response: at `temperature`, on `device`."""

    model: torch.nn.Module
    ref: torch.nn.Module | None
    temperature: float
    device: torch.device


@dataclass(frozen=True)
class Share:
    """This process's rows of one mini-batch and what the loss needs of each: advantages [rows],
    `keep` [rows] (0.0: the response adds nothing to the loss), pi_old's logprobs (None: the
    current policy, i.e. ratio 1 in value), importance weights (None: no correction). `norm`
    counts the whole mini-batch, over every process; `split` cuts the rows into micro-batches."""

    rows: list[RolloutRow]
    advantages: torch.Tensor
    keep: torch.Tensor
    norm: Normalizer
    split: MicroSplit
    old: list[torch.Tensor] | None = None
    is_weights: list[torch.Tensor] | None = None


def accumulate_gradients(
    policies: Policies,
    share: Share,
    cfg: LossConfig,
    par: Parallel | None = None,
    own: dict[int, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Backward the loss of one mini-batch, micro-batch by micro-batch (split_micro), into the
    .grad fields; padding passes (share.split.pad_to beyond the rows' own) have zero loss. With
    several processes (`par`), the share is this process's and its backward joins theirs.
    `own`, when given, receives each row's token logprobs under the policy as it is trained
    (by row of the share). Returns the mini-batch's loss statistics (each micro-batch
    contributes its share)."""
    totals: dict[str, float] = {}
    splits = split_micro(share.rows, share.split.size, share.split.tokens)
    count = max(share.split.pad_to or 0, len(splits))
    for k in range(count):
        padding = k >= len(splits)
        idx = [0] if padding else splits[k]
        loss, stats, logp = micro_batch_loss(policies, share, cfg, idx, padding)
        if own is not None and not padding:
            for i, j in enumerate(idx):
                own[j] = logp[i, : len(share.rows[j]["response_ids"])].cpu()
        if par is None:
            loss.backward()
        else:
            par.backward(policies.model, loss, last=k == count - 1)
        for name, value in stats.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def micro_batch_loss(
    policies: Policies, share: Share, cfg: LossConfig, idx: list[int], padding: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The loss of the share's rows `idx` (policy_loss); a `padding` pass masks every token.
    Also returns the rows' token logprobs under the policy (detached; [rows, response_len])."""
    device = policies.device
    b = collate([share.rows[j] for j in idx], device)
    mask = b.mask * (0.0 if padding else share.keep[idx].unsqueeze(-1).to(device))
    logp, entropy = token_logprobs(
        policies.model,
        b.ids,
        b.attn,
        b.response_start,
        b.response_len,
        policies.temperature,
        with_entropy=True,
    )
    old_logp = (
        logp.detach()
        if share.old is None
        else pad_rows([share.old[j] for j in idx], b.response_len, device)
    )
    ref = reference_logprobs(policies, b, cfg)
    weights = None
    if share.is_weights is not None:
        weights = pad_rows([share.is_weights[j] for j in idx], b.response_len, device)
    loss, stats = policy_loss(
        logp,
        old_logp,
        share.advantages[idx].to(device),
        mask,
        cfg,
        share.norm,
        ref_logp=ref,
        entropy=entropy,
        is_weights=weights,
    )
    return loss, stats, logp.detach()


def reference_logprobs(policies: Policies, b: Batch, cfg: LossConfig) -> torch.Tensor | None:
    """The reference policy's token logprobs of the batch, or None when there is no KL term."""
    if policies.ref is None or cfg.kl_coef <= 0:
        return None
    with torch.no_grad():
        ref, _ = token_logprobs(
            policies.ref, b.ids, b.attn, b.response_start, b.response_len, policies.temperature
        )
    return ref


@dataclass(frozen=True)
class Scored:
    """The step's rows with what every process computes alike for all of them (advantages need
    whole groups, so every process computes them for the whole step), by row position."""

    rows: list[RolloutRow]
    rewards: torch.Tensor  # float64
    advantages: torch.Tensor  # float32, group-normalised
    tie_frac: float  # groups whose rewards all tie: no learning signal
    keep: torch.Tensor  # 0.0 for a truncated response that mask_truncated drops, else 1.0
    sampler: list[torch.Tensor]  # the sampler's logprobs of each response


@dataclass(frozen=True)
class OldPolicy:
    """pi_old, frozen before the step's first update, for this process's rows (by position):
    its token logprobs and, unless is_correction is "none", the truncated importance weights
    against the sampler (else empty)."""

    logprobs: dict[int, torch.Tensor]
    weights: dict[int, torch.Tensor]


def train_step(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rows: list[RolloutRow],
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
    policies = Policies(model, ref_model, temperature, device)
    scored = score_rows(rows, config.loss)
    minis = plan_mini_batches(rows, config, n, par)
    epochs = config.ppo_epochs if update_actor else 0
    # The step's first update trains the policy that sampled pi_old: a forward saved
    read_off = update_actor and config.reads_off_old_policy()
    old = freeze_old_policy(policies, scored, minis[1:] if read_off else minis, config.loss)
    lr = scheduler.get_last_lr()[0]  # every update of this RL step trains at this rate
    max_len = float(config.loss.loss_scale_factor or max_new_tokens)
    shares = [share_of(scored, mini, old, max_len) for mini in minis]
    losses, grad_norms, own = optimise(policies, par, optimizer, shares, config, epochs, read_off)
    if read_off:
        old.logprobs.update((minis[0].mine[i], lp) for i, lp in own.items())
    if update_actor:
        scheduler.step()  # once per RL step, as veRL: warm-up and decay count RL steps
    losses = par.reduce(losses)  # each process holds its share of every mini-batch statistic
    out = step_metrics(scored, losses, grad_norms, lr if update_actor else 0.0, epochs * len(minis))
    real_rows = [j for mini in minis if not mini.stand_in for j in mini.mine]
    out.update(old_policy_metrics(old, scored.sampler, real_rows, config.loss, par))
    return out


def score_rows(rows: list[RolloutRow], cfg: LossConfig) -> Scored:
    """Rewards, group advantages, the loss mask and the sampler's logprobs of the step's rows."""
    rewards = torch.tensor([r["reward"] for r in rows], dtype=torch.float64)
    group_ids = torch.tensor([r["group_id"] for r in rows])
    advantages, tie_frac = group_advantages(rewards, group_ids, cfg.scale_advantages, cfg.adv_eps)
    keep = torch.tensor(
        [0.0 if cfg.mask_truncated and r["finish_reason"] == "length" else 1.0 for r in rows]
    )
    sampler = [torch.tensor(r["sampling_logprobs"], dtype=torch.float32) for r in rows]
    return Scored(rows, rewards, advantages.float(), tie_frac, keep, sampler)


def freeze_old_policy(
    policies: Policies, scored: Scored, minis: list[MiniBatch], cfg: LossConfig
) -> OldPolicy:
    """pi_old of the rows of `minis`, frozen before the first update, as veRL recomputes
    old_log_prob every step: the ratio's denominator when a step makes several updates, what the
    importance weights compare the sampler with, and the sampler/trainer mismatch metric. One
    no-grad forward a response."""
    old: dict[int, torch.Tensor] = {}
    for mini in minis:
        mine_rows = [scored.rows[j] for j in mini.mine]
        split = mini.old
        lps = logprobs_of(
            policies.model,
            mine_rows,
            policies.temperature,
            split.size,
            policies.device,
            split.pad_to,
            split.tokens,
        )
        old.update(zip(mini.mine, lps, strict=True))
    weights: dict[int, torch.Tensor] = {}
    if cfg.is_correction != "none":
        order = sorted(old)
        sampler = [scored.sampler[j] for j in order]
        computed = importance_weights([old[j] for j in order], sampler, cfg)
        weights = dict(zip(order, computed, strict=True))
    return OldPolicy(old, weights)


def share_of(scored: Scored, mini: MiniBatch, old: OldPolicy, max_len: float) -> Share:
    """This process's share of `mini` as the loss takes it; its normalisers count the whole
    mini-batch. A stand-in row keeps nothing."""
    keep, mine = scored.keep, mini.mine
    norm = Normalizer(
        tokens=float(sum(keep[j] * len(scored.rows[j]["response_ids"]) for j in mini.rows)),
        sequences=float(sum(keep[j] for j in mini.rows)),
        max_len=max_len,
    )
    return Share(
        rows=[scored.rows[j] for j in mine],
        advantages=scored.advantages[mine],
        keep=torch.zeros(len(mine)) if mini.stand_in else keep[mine],
        norm=norm,
        split=mini.train,
        old=[old.logprobs[j] for j in mine] if all(j in old.logprobs for j in mine) else None,
        is_weights=[old.weights[j] for j in mine] if old.weights else None,
    )


def optimise(
    policies: Policies,
    par: Parallel,
    optimizer: torch.optim.Optimizer,
    shares: list[Share],
    config: GrpoConfig,
    epochs: int,
    record_first: bool = False,
) -> tuple[dict[str, float], list[float], dict[int, torch.Tensor]]:
    """`epochs` passes over the mini-batches, one optimizer step each. Returns this process's
    summed loss statistics ("loss/<name>"), the gradient norm of every optimizer step, and, with
    `record_first`, the token logprobs of the first mini-batch's rows as its first update found
    them (else empty)."""
    totals: dict[str, float] = {}
    grad_norms = []
    own: dict[int, torch.Tensor] = {}
    for epoch in range(epochs):
        for k, share in enumerate(shares):
            first = own if record_first and epoch == 0 and k == 0 else None
            stats = accumulate_gradients(policies, share, config.loss, par, first)
            for name, value in stats.items():
                totals[f"loss/{name}"] = totals.get(f"loss/{name}", 0.0) + value
            grad_norms.append(par.step(policies.model, optimizer, config.grad_clip))
    return totals, grad_norms, own


def step_metrics(
    scored: Scored, losses: dict[str, float], grad_norms: list[float], lr: float, updates: int
) -> dict[str, float]:
    """The step's reward, advantage, response and optimizer metrics, and the loss statistics
    averaged over its `updates` optimizer steps."""
    rows, rewards = scored.rows, scored.rewards
    lengths = [len(r["response_ids"]) for r in rows]
    return {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std(unbiased=False)),
        "reward/group_acc": part_mean(rows, "correct"),
        "reward/proactive_rate": part_mean(rows, "proactive"),
        "reward/think_rate": part_mean(rows, "think"),
        "reward/tied_group_frac": scored.tie_frac,
        "adv/abs_mean": float(scored.advantages.abs().mean()),
        "response/length_mean": sum(lengths) / len(lengths),
        "response/truncated_frac": sum(r["finish_reason"] == "length" for r in rows) / len(rows),
        "opt/grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
        "opt/lr": lr,
        "opt/updates": updates,
        **{name: value / updates for name, value in losses.items()},
    }


def old_policy_metrics(
    old: OldPolicy,
    sampler: list[torch.Tensor],
    real_rows: list[int],
    cfg: LossConfig,
    par: Parallel,
) -> dict[str, float]:
    """How far the sampler's logprobs are from pi_old's, and the importance weights' spread,
    over every process's own rows (`real_rows`: this process's, stand-ins left out)."""
    out: dict[str, float] = {}
    if old.logprobs:
        diffs = [(old.logprobs[j] - sampler[j]).abs() for j in real_rows]
        flat = torch.cat(diffs or [torch.zeros(0)])
        summed = par.reduce({"sum": float(flat.sum()), "count": float(flat.numel())})
        out["rollout/sampler_logprob_abs_diff"] = summed["sum"] / max(summed["count"], 1.0)
    if old.weights:
        weights = [old.weights[j] for j in real_rows]
        out.update(weight_metrics(torch.cat(weights or [torch.zeros(0)]), cfg, par))
    return out


def weight_metrics(flat: torch.Tensor, cfg: LossConfig, par: Parallel) -> dict[str, float]:
    """Mean, min, max and truncated fraction of the importance weights over every process."""
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
    return {
        "is/weight_mean": summed["sum"] / count,
        "is/weight_min": low,
        "is/weight_max": high,
        "is/truncated_frac": summed["truncated"] / count,
    }


def part_mean(rows: list[RolloutRow], name: str) -> float:
    """Mean of one reward part over the responses that report it (NaN if none does)."""
    values = [dict(r["reward_parts"] or {}).get(name) for r in rows]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")

"""veRL's dotted overrides, translated to our fields.

Our users tune the recipe with veRL's keys (`actor_rollout_ref.rollout.n=8`,
`custom_reward_function.reward_kwargs.beta=0.7`, `trainer.total_epochs=20`). Every stage's
`--set` accepts them: a key is rewritten to the stage's own field before the config is validated,
so the saved config shows the mapped value. Two veRL scripts, two tables: the RL trainer's keys
(read by rollout, grpo and eval - each takes the keys that set one of its fields and leaves the
others to its peers, so one VERL_ARGS line can go to all three) and the SFT trainer's keys
(read by sft). A veRL key we do not support is an error naming the nearest one we do.
docs/verl.md lists the tables.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.verl_keys import (
    IGNORED,
    RL_KEYS,
    RL_SECTIONS,
    SFT_IGNORED,
    SFT_KEYS,
    SFT_SECTIONS,
)

logger = logging.getLogger(__name__)


def _only(allowed: Any, what: str, why: str = "") -> Callable[[Any], Any]:
    """veRL's value that we implement; any other would train differently, so it is an error."""

    def check(value: Any) -> Any:
        if value != allowed:
            reason = f" ({why})" if why else ""
            raise UserError(f"{what}={value!r} is not supported: only {allowed!r}{reason}")
        return value

    return check


def _sft_precision(value: Any) -> Any:
    if value in ("bfloat16", "bf16"):
        return "bf16"
    raise UserError(f"engine.dtype={value!r} is not supported: only 'bfloat16' (bf16 autocast)")


# SFT values whose meaning differs between veRL and our fields (translate applies it for sft).
SFT_CONVERT: dict[str, Callable[[Any], Any]] = {
    "engine": _only("fsdp", "engine"),
    "optim": _only("fsdp", "optim"),
    "data.messages_key": _only("messages", "data.messages_key"),
    "data.train_max_samples": lambda v: None if isinstance(v, int) and v <= 0 else v,
    "optim.min_lr_ratio": lambda v: 0.0 if v is None else v,
    "engine.dtype": _sft_precision,
    "model.lora_rank": _only(0, "model.lora_rank"),
    "optim.optimizer": _only("AdamW", "optim.optimizer"),
    "optim.optimizer_impl": _only("torch.optim", "optim.optimizer_impl"),
    "optim.zero_indexed_step": _only(True, "optim.zero_indexed_step"),
}


def _backend(value: Any) -> Any:
    return {"hf": "transformers"}.get(value, value)


_RS = "veRL's rejection sampling of rollouts is not implemented here"


# Values whose meaning differs between veRL and our fields.
CONVERT: dict[str, Callable[[Any], Any]] = {
    "actor_rollout_ref.rollout.name": _backend,
    "actor_rollout_ref.rollout.top_k": lambda v: 0 if v == -1 else v,
    "actor_rollout_ref.rollout.val_kwargs.top_k": lambda v: 0 if v == -1 else v,
    "algorithm.norm_adv_by_std_in_grpo": lambda v: "group_std" if v else "none",
    "algorithm.adv_estimator": _only("grpo", "algorithm.adv_estimator"),
    "algorithm.use_kl_in_reward": _only(
        False, "algorithm.use_kl_in_reward", "the KL is a loss term here (use_kl_loss)"
    ),
    "actor_rollout_ref.actor.policy_loss.loss_mode": _only(
        "vanilla", "actor_rollout_ref.actor.policy_loss.loss_mode", "the clipped PPO loss"
    ),
    "algorithm.rollout_correction.rollout_is": lambda v: "none" if v is None else v,
    "actor_rollout_ref.actor.optim.min_lr_ratio": lambda v: 0.0 if v is None else v,
    "actor_rollout_ref.rollout.do_sample": _only(
        True, "actor_rollout_ref.rollout.do_sample", "greedy groups are identical: no signal"
    ),
    "actor_rollout_ref.actor.shuffle": _only(
        False, "actor_rollout_ref.actor.shuffle", "mini-batches take a step's groups in order"
    ),
    "data.shuffle": _only(True, "data.shuffle", "prompts are shuffled every epoch, seeded"),
    "actor_rollout_ref.actor.optim.zero_indexed_step": _only(
        True, "optim.zero_indexed_step", "the schedule counts RL steps from 0, as veRL's default"
    ),
    "algorithm.rollout_correction.rollout_rs": _only(None, "rollout_rs", _RS),
    "algorithm.rollout_correction.rollout_rs_threshold": _only(None, "rollout_rs_threshold", _RS),
    "algorithm.rollout_correction.bypass_mode": _only(
        False, "rollout_correction.bypass_mode", "pi_old is always recomputed by the trainer"
    ),
    "algorithm.rollout_correction.loss_type": _only(
        "ppo_clip", "rollout_correction.loss_type", "the clipped PPO loss"
    ),
    "algorithm.rollout_correction.rollout_is_batch_normalize": _only(
        False, "rollout_is_batch_normalize", "weights are truncated, never renormalised"
    ),
}

# veRL keys whose null means "not set" (a deprecated alias falling back to its successor).
NULL_IS_UNSET = (
    "actor_rollout_ref.actor.optim.warmup_style",
    "optim.warmup_style",
    "custom_reward_function.path",  # null: no custom reward, the built-in one
    "custom_reward_function.name",
    "reward.custom_reward_function.path",
    "reward.custom_reward_function.name",
)
# veRL's clip bounds, as its default vanilla loss resolves them (verl.workers.config.ActorConfig):
# clip_ratio_low/high are 0.2 unless set, and clip_ratio only fills a bound set to null.
# veRL's micro-batching keys, resolved together as veRL reads them: a token budget only under
# use_dynamic_bsz, and the log-prob pass following the actor's unless set (its yaml interpolates).
MICRO_KEYS = {
    "actor_rollout_ref.actor.use_dynamic_bsz": "dynamic",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": "tokens",
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz": "log_dynamic",
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": "log_tokens",
}
VERL_MAX_TOKEN_LEN = 16384  # ppo_max_token_len_per_gpu's default
CLIP_KEYS = {
    "actor_rollout_ref.actor.clip_ratio": "ratio",
    "actor_rollout_ref.actor.clip_ratio_low": "low",
    "actor_rollout_ref.actor.clip_ratio_high": "high",
}
VERL_CLIP_DEFAULT = 0.2


class _Table(NamedTuple):
    sections: tuple[str, ...]
    keys: dict[str, dict[str, str | tuple[str, ...]]]
    convert: dict[str, Callable[[Any], Any]]
    ignored: dict[str, str]


def _table(stage: str) -> _Table:
    if stage == "sft":
        return _Table(SFT_SECTIONS, SFT_KEYS, SFT_CONVERT, SFT_IGNORED)
    if stage in ("rollout", "grpo", "eval"):
        return _Table(RL_SECTIONS, RL_KEYS, CONVERT, IGNORED)
    return _Table((), {}, {}, {})


def keys_of(stage: str) -> dict[str, list[str]]:
    """Our field -> the veRL keys that set it on `stage` (for `--help`)."""
    out: dict[str, list[str]] = {}
    for key, targets in _table(stage).keys.items():
        fields = targets.get(stage, ())
        for name in (fields,) if isinstance(fields, str) else fields:
            out.setdefault(name, []).append(key)
    return out


def is_verl_key(key: str, stage: str) -> bool:
    """A key under one of veRL's sections; an undotted one only if the table names it (our own
    `reward=` is not veRL's `reward.` section)."""
    table = _table(stage)
    head, dot, _ = key.partition(".")
    return head in table.sections and bool(dot or key in table.keys or key in table.ignored)


def _match(key: str, entries: Iterable[str]) -> tuple[str, str] | None:
    """(the entry `key` falls under, the rest of the key beneath a `.*` entry), or None."""
    for entry in entries:
        prefix = entry.removesuffix(".*")
        if key == entry or (entry.endswith(".*") and (key + ".").startswith(prefix + ".")):
            return entry, key[len(prefix) :] if entry.endswith(".*") else ""
    return None


def ignored(key: str, stage: str) -> str | None:
    """Why a veRL key changes nothing trained on `stage`, or None if it is not one of those."""
    table = _table(stage).ignored
    found = _match(key, table)
    return table[found[0]] if found else None


def _unsupported(key: str, table: _Table) -> UserError:
    nearest = difflib.get_close_matches(key, [*table.keys, *table.ignored], n=1, cutoff=0.5)
    hint = f"; the nearest we support is {nearest[0]!r}" if nearest else ""
    return UserError(f"veRL key {key!r} is not supported{hint} (docs/verl.md lists them)")


def translate(overrides: tuple[str, ...] | list[str], stage: str) -> list[str]:
    """The overrides with veRL keys rewritten to `stage`'s fields; veRL keys that set another
    stage's field are dropped (logged), unsupported ones raise. Hydra's `+key=` / `++key=`
    (add / force-add a key) read as `key=`: every key we map exists."""
    out: list[str] = []
    together = _Together()
    for assignment in overrides:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        key = key[2:] if key.startswith("++") else key.removeprefix("+")
        if sep and is_verl_key(key, stage):
            out += _translate_key(key, raw, stage, together)
        else:
            out.append(assignment)
    return out + together.assignments()


@dataclass
class _Together:
    """The veRL keys that only mean something together, gathered over all the overrides and
    resolved after them as veRL resolves them: the reward function's path and name, the clip
    bounds, the dynamic-batch keys, use_kl_loss."""

    reward: dict[str, str] = field(default_factory=dict)
    clip: dict[str, Any] = field(default_factory=dict)
    micro: dict[str, Any] = field(default_factory=dict)
    kl_off: bool = False

    def take(self, entry: str, value: Any) -> bool:
        """Keep `entry`'s value for later; False if `entry` is not one of these keys."""
        if entry in CLIP_KEYS:
            self.clip[CLIP_KEYS[entry]] = value
        elif entry in MICRO_KEYS:
            self.micro[MICRO_KEYS[entry]] = value
        elif "custom_reward_function." in entry and entry.endswith((".path", ".name")):
            self.reward[entry.rpartition(".")[2]] = str(value)
        elif entry == "actor_rollout_ref.actor.use_kl_loss":
            self.kl_off = self.kl_off or value is False
        else:
            return False
        return True

    def assignments(self) -> list[str]:
        out = _reward_spec(self.reward) + _clip_bounds(self.clip) + _micro_batching(self.micro)
        if self.kl_off:  # after kl_loss_coef, so use_kl_loss=false wins as in veRL
            out.append("loss.kl_coef=0")
        return out


def _translate_key(key: str, raw: str, stage: str, together: _Together) -> list[str]:
    """Our assignments for one veRL key (none if it waits in `together` or sets nothing here)."""
    table = _table(stage)
    found = _match(key, table.keys)
    if found is None:  # the stage's own table first: data.truncation is both
        if (why := ignored(key, stage)) is None:
            raise _unsupported(key, table)
        logger.warning("veRL key %s has no effect here: %s", key, why)
        return []
    entry, rest = found
    value = _parse(raw)
    if entry in table.convert:
        value = table.convert[entry](value)
    targets = table.keys[entry].get(stage)
    if targets is None:
        others = ", ".join(f"{s}.{f}" for s, f in table.keys[entry].items()) or "nothing"
        logger.info("veRL key %s sets %s; not a %s setting", key, others, stage)
        return []
    if (value is None and entry in NULL_IS_UNSET) or together.take(entry, value):
        return []
    out = []
    for name in (targets,) if isinstance(targets, str) else targets:
        out.append(f"{name}{rest}={json.dumps(value)}")
        logger.info("veRL key %s -> %s = %r", key, f"{name}{rest}", value)
    return out


def _reward_spec(reward: dict[str, str]) -> list[str]:
    """reward=path:name from veRL's custom_reward_function.path and .name."""
    if reward.get("name") == "compute_score" and "path" not in reward:
        return []  # veRL's default name, which only means something with a path
    if not reward:
        return []
    if "path" not in reward:
        raise UserError("custom_reward_function.name needs custom_reward_function.path")
    spec = f"{reward['path']}:{reward.get('name', 'compute_score')}"  # veRL's default name
    return [f"reward={json.dumps(spec)}"]


def _clip_bounds(clip: dict[str, Any]) -> list[str]:
    """Our clip fields from veRL's three keys, resolved as veRL's vanilla loss does: a bound is
    clip_ratio_low/high, or clip_ratio where that bound is null. Only bounds the user touched
    are written (ours default to veRL's 0.2)."""
    out = []
    ratio = clip.get("ratio", VERL_CLIP_DEFAULT)
    for side in ("low", "high"):
        if side in clip:
            bound = ratio if clip[side] is None else clip[side]
            out.append(f"loss.clip_eps_{side}={json.dumps(bound)}")
    if "ratio" in clip and clip.get("low", 0) is not None and clip.get("high", 0) is not None:
        logger.warning(
            "veRL key actor_rollout_ref.actor.clip_ratio has no effect here, as in veRL: "
            "clip_ratio_low and clip_ratio_high (%s unless set) are the bounds; clip_ratio "
            "only fills one set to null",
            VERL_CLIP_DEFAULT,
        )
    return out


def _micro_batching(micro: dict[str, Any]) -> list[str]:
    """micro_batch_tokens and log_prob_micro_batch_tokens from veRL's dynamic-batch keys: the
    budget (ppo_max_token_len_per_gpu, 16384 unless set) applies only under use_dynamic_bsz; the
    log-prob pass takes the actor's choice and budget unless its own keys are set."""
    out = []
    tokens = micro.get("tokens", VERL_MAX_TOKEN_LEN)
    if "dynamic" in micro:
        out.append(f"micro_batch_tokens={json.dumps(tokens if micro['dynamic'] else None)}")
    elif "tokens" in micro:
        logger.warning(
            "veRL key actor_rollout_ref.actor.ppo_max_token_len_per_gpu has no effect here, as "
            "in veRL: it is the budget of use_dynamic_bsz=true"
        )
    if "dynamic" in micro or "log_dynamic" in micro or "log_tokens" in micro:
        dynamic = micro.get("log_dynamic", micro.get("dynamic", False))
        budget = micro.get("log_tokens", tokens)
        out.append(f"log_prob_micro_batch_tokens={json.dumps(budget if dynamic else None)}")
    return out


def _parse(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        # veRL's launch scripts write Python/Hydra booleans
        return {"True": True, "False": False}.get(raw, raw)

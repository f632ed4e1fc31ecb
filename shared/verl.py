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
from collections.abc import Callable
from typing import Any

from proactive_rl.shared.errors import UserError

logger = logging.getLogger(__name__)

# The top-level sections of veRL's configs: a key under one of them is a veRL key (no field of
# ours starts with these names).
RL_SECTIONS = ("data", "actor_rollout_ref", "custom_reward_function", "trainer", "algorithm")
SFT_SECTIONS = ("data", "model", "optim", "trainer")

# veRL key -> {stage: our field or fields}. A key ending in ".*" maps everything beneath it.
RL_KEYS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "data.train_batch_size": {"grpo": "prompts_per_step"},
    "data.max_prompt_length": {"rollout": "sampling.max_prompt_tokens"},
    "data.max_response_length": {
        "rollout": "sampling.max_new_tokens",
        "eval": "sampling.max_new_tokens",
    },
    "actor_rollout_ref.model.path": {"grpo": "init_model"},
    "actor_rollout_ref.model.enable_gradient_checkpointing": {"grpo": "gradient_checkpointing"},
    "actor_rollout_ref.actor.optim.lr": {"grpo": "learning_rate"},
    "actor_rollout_ref.actor.optim.weight_decay": {"grpo": "weight_decay"},
    "actor_rollout_ref.actor.optim.lr_warmup_steps": {"grpo": "warmup_steps"},
    "actor_rollout_ref.actor.grad_clip": {"grpo": "grad_clip"},
    "actor_rollout_ref.actor.clip_ratio": {"grpo": ("loss.clip_eps_low", "loss.clip_eps_high")},
    "actor_rollout_ref.actor.clip_ratio_low": {"grpo": "loss.clip_eps_low"},
    "actor_rollout_ref.actor.clip_ratio_high": {"grpo": "loss.clip_eps_high"},
    "actor_rollout_ref.actor.clip_ratio_c": {"grpo": "loss.dual_clip"},
    "actor_rollout_ref.actor.ppo_epochs": {"grpo": "ppo_epochs"},
    "actor_rollout_ref.actor.ppo_mini_batch_size": {"grpo": "mini_batch_prompts"},
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": {"grpo": "micro_batch_size"},
    "actor_rollout_ref.actor.use_kl_loss": {"grpo": "loss.kl_coef"},
    "actor_rollout_ref.actor.kl_loss_coef": {"grpo": "loss.kl_coef"},
    "actor_rollout_ref.actor.kl_loss_type": {"grpo": "loss.kl_type"},
    "actor_rollout_ref.actor.entropy_coeff": {"grpo": "loss.entropy_coef"},
    "actor_rollout_ref.actor.loss_agg_mode": {"grpo": "loss.agg"},
    "actor_rollout_ref.rollout.n": {"grpo": "n"},
    "actor_rollout_ref.rollout.name": {"rollout": "backend", "eval": "backend"},
    "actor_rollout_ref.rollout.temperature": {"rollout": "sampling.temperature"},
    "actor_rollout_ref.rollout.top_p": {"rollout": "sampling.top_p"},
    "actor_rollout_ref.rollout.top_k": {"rollout": "sampling.top_k"},
    "actor_rollout_ref.rollout.gpu_memory_utilization": {
        "rollout": "vllm.gpu_memory_utilization",
        "eval": "vllm.gpu_memory_utilization",
    },
    "actor_rollout_ref.rollout.tensor_model_parallel_size": {
        "rollout": "vllm.tensor_parallel_size",
        "eval": "vllm.tensor_parallel_size",
    },
    "actor_rollout_ref.rollout.enforce_eager": {
        "rollout": "vllm.enforce_eager",
        "eval": "vllm.enforce_eager",
    },
    "actor_rollout_ref.rollout.enable_prefix_caching": {
        "rollout": "vllm.enable_prefix_caching",
        "eval": "vllm.enable_prefix_caching",
    },
    "actor_rollout_ref.rollout.max_model_len": {
        "rollout": "vllm.max_model_len",
        "eval": "vllm.max_model_len",
    },
    "actor_rollout_ref.rollout.val_kwargs.n": {"eval": "n"},
    "actor_rollout_ref.rollout.val_kwargs.temperature": {"eval": "sampling.temperature"},
    "actor_rollout_ref.rollout.val_kwargs.top_p": {"eval": "sampling.top_p"},
    "actor_rollout_ref.rollout.val_kwargs.top_k": {"eval": "sampling.top_k"},
    "custom_reward_function.path": {"rollout": "reward", "eval": "reward"},
    "custom_reward_function.name": {"rollout": "reward", "eval": "reward"},
    "custom_reward_function.reward_kwargs.*": {"rollout": "reward_kwargs", "eval": "reward_kwargs"},
    "trainer.total_epochs": {"grpo": "epochs"},
    "trainer.total_training_steps": {"grpo": "max_steps"},
    "algorithm.adv_estimator": {},
    "algorithm.norm_adv_by_std_in_grpo": {"grpo": "loss.scale_advantages"},
    "algorithm.use_kl_in_reward": {},
}

SFT_KEYS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "data.micro_batch_size_per_gpu": {"sft": "per_device_batch_size"},
    "data.max_length": {"sft": "max_length"},
    "model.partial_pretrain": {"sft": "base_model"},
    "model.enable_gradient_checkpointing": {"sft": "gradient_checkpointing"},
    "optim.lr": {"sft": "learning_rate"},
    "optim.weight_decay": {"sft": "weight_decay"},
    "optim.warmup_steps_ratio": {"sft": "warmup_ratio"},
    "trainer.total_epochs": {"sft": "epochs"},
    "trainer.seed": {"sft": "seed"},
}

# veRL keys with nothing to set here, and why (a warning, not an error: users' launch scripts
# carry them, and what they control is done another way).
IGNORED: dict[str, str] = {
    "trainer.logger": "every number is logged to tensorboard and a JSONL file",
    "trainer.project_name": "the run directory names the run (RUN_NAME / --run-dir)",
    "trainer.experiment_name": "the run directory names the run (RUN_NAME / --run-dir)",
    "trainer.default_local_dir": "the run directory names the run (RUN_NAME / --run-dir)",
    "trainer.n_gpus_per_node": "GPUs are given per container (compose.gpu.yaml)",
    "trainer.nnodes": "GPUs are given per container (compose.gpu.yaml)",
    "trainer.save_freq": "every step's policy is published",
    "trainer.test_freq": "evaluation is its own stage (proactive eval)",
    "trainer.val_before_train": "evaluation is its own stage (proactive eval)",
    "trainer.critic_warmup": "GRPO has no critic",
    "actor_rollout_ref.model.use_remove_padding": "padding is always masked out",
    "actor_rollout_ref.actor.use_dynamic_bsz": "micro batches are fixed (micro_batch_size)",
    "actor_rollout_ref.actor.fsdp_config.param_offload": "training uses DeepSpeed: cpu_offload",
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload": "training uses DeepSpeed: cpu_offload",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": "set by micro_batch_size",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": "set by micro_batch_size",
    "actor_rollout_ref.ref.fsdp_config.param_offload": "the reference is the trainer's own copy",
    "data.filter_overlong_prompts": "overlong prompts are always filtered",
    "data.truncation": "overlong prompts are always filtered",
}


def _kl_type(value: Any) -> Any:
    names = {"kl": "k1", "k1": "k1", "mse": "k2", "k2": "k2", "low_var_kl": "low_var_kl"}
    return names.get(value, "low_var_kl" if value == "k3" else value)


def _backend(value: Any) -> Any:
    return {"hf": "transformers"}.get(value, value)


def _only(allowed: Any, what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value != allowed:
            raise UserError(f"{what}={value!r} is not supported: only {allowed!r}")
        return value

    return check


# Values whose meaning differs between veRL and our fields.
CONVERT: dict[str, Callable[[Any], Any]] = {
    "actor_rollout_ref.actor.kl_loss_type": _kl_type,
    "actor_rollout_ref.rollout.name": _backend,
    "actor_rollout_ref.rollout.top_k": lambda v: 0 if v == -1 else v,
    "actor_rollout_ref.rollout.val_kwargs.top_k": lambda v: 0 if v == -1 else v,
    "algorithm.norm_adv_by_std_in_grpo": lambda v: "group_std" if v else "none",
    "algorithm.adv_estimator": _only("grpo", "algorithm.adv_estimator"),
    "algorithm.use_kl_in_reward": _only(False, "algorithm.use_kl_in_reward"),
}


def _table(stage: str) -> tuple[tuple[str, ...], dict[str, dict[str, str | tuple[str, ...]]]]:
    if stage == "sft":
        return SFT_SECTIONS, SFT_KEYS
    if stage in ("rollout", "grpo", "eval"):
        return RL_SECTIONS, RL_KEYS
    return (), {}


def is_verl_key(key: str, stage: str) -> bool:
    sections, _ = _table(stage)
    return key.split(".", 1)[0] in sections


def _lookup(key: str, table: dict[str, dict[str, str | tuple[str, ...]]]) -> tuple[str, str]:
    """(table entry, the rest of the key beneath a `.*` entry)."""
    if key in table:
        return key, ""
    for entry in table:
        prefix = entry.removesuffix(".*")
        if entry.endswith(".*") and (key == prefix or key.startswith(prefix + ".")):
            return entry, key[len(prefix) :]
    nearest = difflib.get_close_matches(key, list(table) + list(IGNORED), n=1, cutoff=0.5)
    hint = f"; the nearest we support is {nearest[0]!r}" if nearest else ""
    raise UserError(f"veRL key {key!r} is not supported{hint} (docs/verl.md lists them)")


def translate(overrides: tuple[str, ...] | list[str], stage: str) -> list[str]:
    """The overrides with veRL keys rewritten to `stage`'s fields; veRL keys that set another
    stage's field are dropped (logged), unsupported ones raise."""
    out: list[str] = []
    reward: dict[str, str] = {}
    kl_off = False
    for assignment in overrides:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not is_verl_key(key, stage):
            out.append(assignment)
            continue
        if key in IGNORED:
            logger.warning("veRL key %s has no effect here: %s", key, IGNORED[key])
            continue
        _, table = _table(stage)
        entry, rest = _lookup(key, table)
        value = _parse(raw)
        if entry in CONVERT:
            value = CONVERT[entry](value)
        targets = table[entry].get(stage)
        if targets is None:
            others = ", ".join(f"{s}.{f}" for s, f in table[entry].items()) or "nothing"
            logger.info("veRL key %s sets %s; not a %s setting", key, others, stage)
            continue
        if entry.startswith("custom_reward_function.") and entry.endswith((".path", ".name")):
            reward[entry.rpartition(".")[2]] = str(value)
            continue
        if entry == "actor_rollout_ref.actor.use_kl_loss":
            kl_off = kl_off or value is False
            continue
        for field in (targets,) if isinstance(targets, str) else targets:
            out.append(f"{field}{rest}={json.dumps(value)}")
            logger.info("veRL key %s -> %s = %r", key, f"{field}{rest}", value)
    if reward:
        if "path" not in reward:
            raise UserError("custom_reward_function.name needs custom_reward_function.path")
        spec = f"{reward['path']}:{reward.get('name', 'compute_score')}"  # veRL's default name
        out.append(f"reward={json.dumps(spec)}")
    if kl_off:  # after kl_loss_coef, so use_kl_loss=false wins as in veRL
        out.append("loss.kl_coef=0")
    return out


def _parse(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        # veRL's launch scripts write Python/Hydra booleans
        return {"True": True, "False": False}.get(raw, raw)

"""veRL's keys we read: which of our fields each sets, per stage, and the keys that change nothing
trained here (a warning each, with the reason). Pure tables; shared/verl.py translates with them,
shared/verl_defaults.py records their units and defaults, docs/verl.md is generated from all three.
"""

from __future__ import annotations

# The top-level sections of veRL's configs: a key under one of them is a veRL key (no field of
# ours starts with these names).
RL_SECTIONS = (
    "data",
    "actor_rollout_ref",
    "custom_reward_function",
    "trainer",
    "algorithm",
    "ray_kwargs",
    "reward",
)
# veRL 0.9.1's sft_trainer_engine.yaml sections, and two top-level keys of the older
# fsdp_sft_trainer that its example scripts still pass.
SFT_SECTIONS = (
    "data",
    "model",
    "engine",
    "optim",
    "checkpoint",
    "profiler",
    "trainer",
    "ulysses_sequence_parallel_size",
    "use_remove_padding",
)

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
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": {"grpo": "warmup_ratio"},
    "actor_rollout_ref.actor.optim.lr_scheduler_type": {"grpo": "lr_scheduler"},
    "actor_rollout_ref.actor.optim.warmup_style": {"grpo": "lr_scheduler"},
    "actor_rollout_ref.actor.optim.min_lr_ratio": {"grpo": "min_lr_ratio"},
    "actor_rollout_ref.actor.optim.num_cycles": {"grpo": "num_cycles"},
    "actor_rollout_ref.actor.optim.betas": {"grpo": "betas"},
    "actor_rollout_ref.actor.optim.zero_indexed_step": {},
    "actor_rollout_ref.actor.optim.clip_grad": {"grpo": "grad_clip"},
    "actor_rollout_ref.actor.grad_clip": {"grpo": "grad_clip"},
    "actor_rollout_ref.actor.clip_ratio": {"grpo": ("loss.clip_eps_low", "loss.clip_eps_high")},
    "actor_rollout_ref.actor.clip_ratio_low": {"grpo": "loss.clip_eps_low"},
    "actor_rollout_ref.actor.clip_ratio_high": {"grpo": "loss.clip_eps_high"},
    "actor_rollout_ref.actor.clip_ratio_c": {"grpo": "loss.dual_clip"},
    "actor_rollout_ref.actor.ppo_epochs": {"grpo": "ppo_epochs"},
    "actor_rollout_ref.actor.ppo_mini_batch_size": {"grpo": "mini_batch_prompts"},
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": {"grpo": "micro_batch_size"},
    # token-budget micro-batches: resolved together (shared/verl.py, _micro_batching)
    "actor_rollout_ref.actor.use_dynamic_bsz": {"grpo": "micro_batch_tokens"},
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": {"grpo": "micro_batch_tokens"},
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": {
        "grpo": "log_prob_micro_batch_size"
    },
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz": {"grpo": "log_prob_micro_batch_tokens"},
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": {
        "grpo": "log_prob_micro_batch_tokens"
    },
    "actor_rollout_ref.actor.use_kl_loss": {"grpo": "loss.kl_coef"},
    "actor_rollout_ref.actor.kl_loss_coef": {"grpo": "loss.kl_coef"},
    "actor_rollout_ref.actor.kl_loss_type": {"grpo": "loss.kl_type"},
    "actor_rollout_ref.actor.entropy_coeff": {"grpo": "loss.entropy_coef"},
    "actor_rollout_ref.actor.loss_agg_mode": {"grpo": "loss.agg"},
    "actor_rollout_ref.actor.loss_scale_factor": {"grpo": "loss.loss_scale_factor"},
    "actor_rollout_ref.actor.policy_loss.loss_mode": {},
    "actor_rollout_ref.rollout.n": {"grpo": "n"},
    "actor_rollout_ref.rollout.do_sample": {},
    "actor_rollout_ref.actor.shuffle": {},
    "data.shuffle": {},
    "actor_rollout_ref.rollout.name": {"rollout": "backend", "eval": "backend"},
    "actor_rollout_ref.rollout.temperature": {"rollout": "sampling.temperature"},
    "actor_rollout_ref.rollout.top_p": {"rollout": "sampling.top_p"},
    "actor_rollout_ref.rollout.top_k": {"rollout": "sampling.top_k"},
    # veRL's vLLM server reads it for every request, validation's too
    "actor_rollout_ref.rollout.ignore_eos": {
        "rollout": "sampling.ignore_eos",
        "eval": "sampling.ignore_eos",
    },
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
    # veRL 0.9.1 moved the custom reward under `reward` (the top-level one still works there)
    "reward.custom_reward_function.path": {"rollout": "reward", "eval": "reward"},
    "reward.custom_reward_function.name": {"rollout": "reward", "eval": "reward"},
    "reward.custom_reward_function.reward_kwargs.*": {
        "rollout": "reward_kwargs",
        "eval": "reward_kwargs",
    },
    "trainer.total_epochs": {"grpo": "epochs"},
    "trainer.logger": {s: "tracking.logger" for s in ("rollout", "grpo", "eval")},
    "trainer.project_name": {s: "tracking.project" for s in ("rollout", "grpo", "eval")},
    "trainer.experiment_name": {s: "tracking.experiment" for s in ("rollout", "grpo", "eval")},
    "trainer.total_training_steps": {"grpo": "max_steps"},
    "trainer.critic_warmup": {"grpo": "critic_warmup"},
    "algorithm.adv_estimator": {},
    "algorithm.norm_adv_by_std_in_grpo": {"grpo": "loss.scale_advantages"},
    "algorithm.use_kl_in_reward": {},
    "algorithm.rollout_correction.rollout_is": {"grpo": "loss.is_correction"},
    "algorithm.rollout_correction.rollout_is_threshold": {"grpo": "loss.is_threshold"},
    # the rest of veRL's rollout correction: only its defaults (off) are accepted
    "algorithm.rollout_correction.rollout_rs": {},
    "algorithm.rollout_correction.rollout_rs_threshold": {},
    "algorithm.rollout_correction.bypass_mode": {},
    "algorithm.rollout_correction.loss_type": {},
    "algorithm.rollout_correction.rollout_is_batch_normalize": {},
}

SFT_KEYS: dict[str, dict[str, str | tuple[str, ...]]] = {
    # veRL 0.9.1's SFT trainer (sft_trainer.py, sft_trainer_engine.yaml)
    "engine": {},  # Hydra's config-group choices: only the FSDP engine's meaning is ours
    "optim": {},
    "data.train_batch_size": {"sft": "train_batch_size"},
    "data.micro_batch_size_per_gpu": {"sft": "per_device_batch_size"},
    "data.max_length": {"sft": "max_length"},
    "data.truncation": {"sft": "truncation"},
    "data.train_max_samples": {"sft": "max_samples"},
    "data.messages_key": {},
    "model.path": {"sft": "base_model"},
    "model.enable_gradient_checkpointing": {"sft": "gradient_checkpointing"},
    "model.lora_rank": {},
    "engine.dtype": {"sft": "precision"},
    "optim.optimizer": {},
    "optim.optimizer_impl": {},
    "optim.lr": {"sft": "learning_rate"},
    "optim.weight_decay": {"sft": "weight_decay"},
    "optim.betas": {"sft": "betas"},
    "optim.clip_grad": {"sft": "grad_clip"},
    "optim.lr_warmup_steps_ratio": {"sft": "warmup_ratio"},
    "optim.lr_warmup_steps": {"sft": "warmup_steps"},
    "optim.lr_scheduler_type": {"sft": "lr_scheduler"},
    "optim.min_lr_ratio": {"sft": "min_lr_ratio"},
    "optim.num_cycles": {"sft": "num_cycles"},
    "optim.zero_indexed_step": {},
    "trainer.total_epochs": {"sft": "epochs"},
    "trainer.logger": {"sft": "tracking.logger"},
    "trainer.project_name": {"sft": "tracking.project"},
    "trainer.experiment_name": {"sft": "tracking.experiment"},
    "trainer.seed": {"sft": "seed"},
    # spellings veRL still accepts with a deprecation warning
    "optim.warmup_style": {"sft": "lr_scheduler"},
    "optim.grad_clip": {"sft": "grad_clip"},
    # the older fsdp_sft_trainer's names (its example scripts still use them)
    "model.partial_pretrain": {"sft": "base_model"},
    "optim.warmup_steps_ratio": {"sft": "warmup_ratio"},
    "optim.lr_scheduler": {"sft": "lr_scheduler"},
}


# Why keys about mechanisms we do not have change nothing that is trained.
_SAME_GRADIENT = (
    "micro-batches never change the gradient here (every normaliser is fixed per mini-batch); "
    "micro_batch_size sets their size"
)
_REF_LOG_PROBS = (
    "the reference's log-probs are computed inside each training micro-batch (its size: "
    "micro_batch_size or micro_batch_tokens); they take no gradient, batching changes memory only"
)
_DEEPSPEED = "training uses DeepSpeed (strategy=zero2/zero3; offload: cpu_offload=true)"
_SAME_GRADIENT_SFT = (
    "micro-batches never change the gradient here (the loss is the token mean over the global "
    "batch); per_device_batch_size sets their size"
)
_SEQUENCE_PARALLEL = "sequence parallelism splits activations over GPUs; the loss is the same"

# veRL keys with nothing to set here, and why (a warning, not an error: users' launch scripts
# carry them, and what they control is done another way). First the keys of both trainers.
_LAUNCH: dict[str, str] = {
    "trainer.default_local_dir": "the run directory names the run (RUN_NAME / --run-dir)",
    "trainer.n_gpus_per_node": "GPUs are given per container (compose.gpu.yaml)",
    "trainer.nnodes": "GPUs are given per container (compose.gpu.yaml)",
    "trainer.test_freq": "evaluation is its own stage (proactive eval)",
    "trainer.resume_mode": "pass --resume to a stage to continue its run",
}

# The RL trainer's (rollout, grpo, eval).
IGNORED: dict[str, str] = {
    **_LAUNCH,
    "trainer.save_freq": "every step's policy is published",
    "trainer.val_before_train": "evaluation is its own stage (proactive eval)",
    "trainer.log_val_generations": "eval writes every sample to samples.jsonl",
    "trainer.balance_batch": "it reorders a step's responses across GPUs; the mini-batch loss "
    "is the same",
    "actor_rollout_ref.model.use_remove_padding": "padding is always masked out",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": _REF_LOG_PROBS,
    "actor_rollout_ref.ref.log_prob_use_dynamic_bsz": _REF_LOG_PROBS,
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu": _REF_LOG_PROBS,
    "actor_rollout_ref.actor.fsdp_config.*": _DEEPSPEED,
    "actor_rollout_ref.ref.fsdp_config.*": _DEEPSPEED,
    "actor_rollout_ref.actor.ulysses_sequence_parallel_size": _SEQUENCE_PARALLEL,
    "actor_rollout_ref.ref.ulysses_sequence_parallel_size": _SEQUENCE_PARALLEL,
    "actor_rollout_ref.actor.use_torch_compile": "compiling changes speed, not the loss",
    "actor_rollout_ref.rollout.free_cache_engine": "the rollout worker keeps its own GPUs: "
    "there is no memory to hand back to training",
    "actor_rollout_ref.rollout.mode": "the rollout is a worker of its own (docs/contract.md)",
    "actor_rollout_ref.rollout.calculate_log_probs": "the sampler's log-probs are always kept",
    "actor_rollout_ref.rollout.val_kwargs.do_sample": "veRL 0.9.1's validation samples with "
    "val_kwargs.temperature alone (0 = greedy; experimental/agent_loop/agent_loop.py): set that",
    "algorithm.kl_ctrl.*": "only read with algorithm.use_kl_in_reward, which must be false",
    "ray_kwargs.*": "there is no Ray: compose or Kubernetes start the stages",
    "data.filter_overlong_prompts": "overlong prompts are always filtered",
    "data.truncation": "overlong prompts are always filtered",
}

# The SFT trainer's (sft).
SFT_IGNORED: dict[str, str] = {
    **_LAUNCH,
    "trainer.save_freq": "every epoch is published (sft/epoch_N)",
    "trainer.max_ckpt_to_keep": "every epoch is published (sft/epoch_N)",
    "trainer.device": "the container's devices decide (cpu or cuda)",
    "data.use_dynamic_bsz": _SAME_GRADIENT_SFT,
    "data.max_token_len_per_gpu": _SAME_GRADIENT_SFT,
    "data.micro_batch_size": "veRL's SFT trainer does not read it (micro_batch_size_per_gpu)",
    "data.pad_mode": "padding is always masked out",
    "data.balance_dp_token": "veRL does not implement it either",
    "data.num_workers": "data loading workers change speed, not the data",
    "model.use_remove_padding": "padding is always masked out",
    "use_remove_padding": "padding is always masked out",
    "ulysses_sequence_parallel_size": _SEQUENCE_PARALLEL,
    "engine.ulysses_sequence_parallel_size": _SEQUENCE_PARALLEL,
    "engine.strategy": _DEEPSPEED,
    "engine.fsdp_size": _DEEPSPEED,
    "engine.param_offload": _DEEPSPEED,
    "engine.optimizer_offload": _DEEPSPEED,
    "engine.use_torch_compile": "compiling changes speed, not the loss",
    "model.strategy": _DEEPSPEED,
    "model.fsdp_config.*": _DEEPSPEED,
    "checkpoint.*": "every epoch is published whole (safetensors), with its checksums",
    "profiler.*": "no profiler hooks: docs/benchmarks.md measures the stages",
}

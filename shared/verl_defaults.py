"""What each veRL key we map means here: its unit, veRL's default, and where ours differs, why.

The rule: where the users' recipe (their `run_*.sh`, seed-pipeline.md) sets a value, our default
is the recipe's; everywhere else it is veRL's. `VERL_DEFAULTS` records veRL's defaults (veRL
0.9.1, read from its generated trainer configs); `tests/verl/test_verl_config.py` checks that
record against the installed release, and `tests/unit/test_verl_defaults.py` checks each of our
defaults against it: equal after translation, or the recipe's (`RECIPE`), or a deviation with
its reason (`DEVIATIONS`). docs/verl.md is generated from these tables and shared/verl.py's.
"""

from __future__ import annotations

from typing import Any

# veRL's marker of a value it requires the user to give (OmegaConf's "???").
REQUIRED = "???"

# veRL key -> its unit and meaning, where the name alone does not say it.
UNITS: dict[str, str] = {
    "data.train_batch_size": "prompts per RL step",
    "data.max_prompt_length": "tokens",
    "data.max_response_length": "tokens",
    "actor_rollout_ref.actor.optim.lr": "peak learning rate",
    "actor_rollout_ref.actor.optim.weight_decay": "AdamW's decoupled decay",
    "actor_rollout_ref.actor.optim.lr_warmup_steps": "RL steps (<= 0: the ratio below)",
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": "fraction of the run's RL steps",
    "actor_rollout_ref.actor.optim.lr_scheduler_type": "constant or cosine, stepped per RL step",
    "actor_rollout_ref.actor.optim.warmup_style": "deprecated name of lr_scheduler_type",
    "actor_rollout_ref.actor.optim.min_lr_ratio": "fraction of optim.lr (cosine floor)",
    "actor_rollout_ref.actor.optim.num_cycles": "cosine waves after warm-up (0.5: a half-wave)",
    "actor_rollout_ref.actor.optim.betas": "AdamW (beta1, beta2)",
    "actor_rollout_ref.actor.optim.clip_grad": "max gradient L2 norm, per optimizer update",
    "actor_rollout_ref.actor.grad_clip": "max gradient L2 norm (veRL <= 0.6's name)",
    "actor_rollout_ref.actor.clip_ratio": "ratio clip eps; fills a bound set to null",
    "actor_rollout_ref.actor.clip_ratio_low": "ratio >= 1 - eps",
    "actor_rollout_ref.actor.clip_ratio_high": "ratio <= 1 + eps",
    "actor_rollout_ref.actor.clip_ratio_c": "dual-clip bound c on negative advantages",
    "actor_rollout_ref.actor.ppo_epochs": "passes over one step's responses",
    "actor_rollout_ref.actor.ppo_mini_batch_size": "prompts per optimizer update (x n responses)",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "responses per forward/backward",
    "actor_rollout_ref.actor.use_dynamic_bsz": "micro-batches by token budget (below)",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": "prompt + response tokens per micro-batch",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": "responses per pi_old forward",
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz": "the pi_old pass by token budget",
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": "tokens per pi_old forward",
    "actor_rollout_ref.actor.kl_loss_coef": "weight of the KL term in the loss",
    "actor_rollout_ref.actor.entropy_coeff": "weight of the entropy bonus",
    "actor_rollout_ref.actor.loss_scale_factor": "tokens per response in seq-mean-token-sum-norm "
    "(null: the response horizon, max_response_length)",
    "actor_rollout_ref.rollout.n": "responses per prompt (the group)",
    "actor_rollout_ref.rollout.top_k": "tokens (-1: off)",
    "actor_rollout_ref.rollout.ignore_eos": "sample on past EOS, to the response length",
    "actor_rollout_ref.rollout.gpu_memory_utilization": "fraction of each GPU",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": "GPUs per engine",
    "actor_rollout_ref.rollout.max_model_len": "tokens",
    "actor_rollout_ref.rollout.val_kwargs.n": "responses per question",
    "actor_rollout_ref.rollout.val_kwargs.temperature": "0: greedy",
    "actor_rollout_ref.rollout.val_kwargs.top_k": "tokens (-1: off)",
    "trainer.total_epochs": "passes over the RL train split",
    "trainer.total_training_steps": "RL steps (null: every epoch); the LR schedule spans it",
    "trainer.critic_warmup": "RL steps (counted from 1) before the first actor update",
    "algorithm.rollout_correction.rollout_is": "null (off), token or sequence",
    "algorithm.rollout_correction.rollout_is_threshold": "upper truncation of the IS weight",
}

# veRL 0.9.1's defaults (verl/trainer/config/_generated_ppo_trainer.yaml and the composed
# sft_trainer_engine.yaml), in veRL's spelling.
VERL_DEFAULTS: dict[str, Any] = {
    "data.train_batch_size": 1024,
    "data.max_prompt_length": 512,
    "data.max_response_length": 512,
    "actor_rollout_ref.model.path": "~/models/deepseek-llm-7b-chat",
    "actor_rollout_ref.model.enable_gradient_checkpointing": True,
    "actor_rollout_ref.actor.optim.lr": 1e-06,
    "actor_rollout_ref.actor.optim.weight_decay": 0.01,
    "actor_rollout_ref.actor.optim.lr_warmup_steps": -1,
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": 0.0,
    "actor_rollout_ref.actor.optim.lr_scheduler_type": "constant",
    "actor_rollout_ref.actor.optim.warmup_style": None,
    "actor_rollout_ref.actor.optim.min_lr_ratio": 0.0,
    "actor_rollout_ref.actor.optim.num_cycles": 0.5,
    "actor_rollout_ref.actor.optim.betas": [0.9, 0.999],
    "actor_rollout_ref.actor.optim.zero_indexed_step": True,
    "actor_rollout_ref.actor.optim.clip_grad": 1.0,
    "actor_rollout_ref.actor.grad_clip": 1.0,
    "actor_rollout_ref.actor.clip_ratio": 0.2,
    "actor_rollout_ref.actor.clip_ratio_low": 0.2,
    "actor_rollout_ref.actor.clip_ratio_high": 0.2,
    "actor_rollout_ref.actor.clip_ratio_c": 3.0,
    "actor_rollout_ref.actor.ppo_epochs": 1,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 256,
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": None,
    "actor_rollout_ref.actor.use_dynamic_bsz": False,
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": 16384,
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": None,
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz": False,
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": 16384,
    "actor_rollout_ref.actor.use_kl_loss": False,
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
    "actor_rollout_ref.actor.entropy_coeff": 0,
    "actor_rollout_ref.actor.loss_agg_mode": "token-mean",
    "actor_rollout_ref.actor.loss_scale_factor": None,
    "actor_rollout_ref.actor.policy_loss.loss_mode": "vanilla",
    "actor_rollout_ref.rollout.n": 1,
    "actor_rollout_ref.rollout.name": REQUIRED,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "actor_rollout_ref.rollout.top_p": 1,
    "actor_rollout_ref.rollout.top_k": -1,
    "actor_rollout_ref.rollout.ignore_eos": False,
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.5,
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 2,
    "actor_rollout_ref.rollout.enforce_eager": False,
    "actor_rollout_ref.rollout.enable_prefix_caching": True,
    "actor_rollout_ref.rollout.max_model_len": None,
    "actor_rollout_ref.rollout.val_kwargs.n": 1,
    "actor_rollout_ref.rollout.val_kwargs.temperature": 0,
    "actor_rollout_ref.rollout.val_kwargs.top_p": 1.0,
    "actor_rollout_ref.rollout.val_kwargs.top_k": -1,
    "custom_reward_function.path": None,
    "custom_reward_function.name": None,
    "reward.custom_reward_function.path": None,
    "reward.custom_reward_function.name": "compute_score",
    "actor_rollout_ref.rollout.do_sample": True,
    "actor_rollout_ref.actor.shuffle": False,
    "data.shuffle": True,
    "trainer.total_epochs": 30,
    "trainer.total_training_steps": None,
    "trainer.critic_warmup": 0,
    "trainer.logger": ["console", "wandb"],
    "trainer.project_name": "verl_examples",
    "trainer.experiment_name": "gsm8k",
    "algorithm.adv_estimator": "gae",
    "algorithm.norm_adv_by_std_in_grpo": True,
    "algorithm.use_kl_in_reward": False,
    "algorithm.rollout_correction.rollout_is": None,
    "algorithm.rollout_correction.rollout_is_threshold": 2.0,
    "algorithm.rollout_correction.rollout_rs": None,
    "algorithm.rollout_correction.rollout_rs_threshold": None,
    "algorithm.rollout_correction.bypass_mode": False,
    "algorithm.rollout_correction.loss_type": "ppo_clip",
    "algorithm.rollout_correction.rollout_is_batch_normalize": False,
}

# The users' recipe (seed-pipeline.md), in veRL's spelling: our defaults are these.
RECIPE: dict[str, Any] = {
    "data.train_batch_size": 256,
    "data.max_prompt_length": 1024,
    "data.max_response_length": 1024,
    "actor_rollout_ref.actor.optim.weight_decay": 0.0,
    "actor_rollout_ref.actor.optim.min_lr_ratio": 0.1,  # lr 1e-6, min lr 1e-7
    "actor_rollout_ref.actor.ppo_mini_batch_size": 64,
    "actor_rollout_ref.actor.use_kl_loss": True,
    "actor_rollout_ref.rollout.n": 16,
    "trainer.total_epochs": 10,
    "trainer.logger": ["console", "tensorboard"],
    "trainer.project_name": "proactive_agent",
    "algorithm.adv_estimator": "grpo",
}

# Where our default is neither veRL's nor the recipe's, and why.
DEVIATIONS: dict[str, str] = {
    "actor_rollout_ref.model.path": "RL starts from this run's SFT checkpoint ('sft'), as the "
    "recipe's run_sft_then_rl.sh does",
    "actor_rollout_ref.model.enable_gradient_checkpointing": "memory, not the loss: off for the "
    "CPU-sized defaults; the qwen3-8b recipe preset turns it on",
    "actor_rollout_ref.actor.optim.lr_scheduler_type": "the recipe's min lr 1e-7 only means "
    "something under a decaying schedule (veRL ignores min_lr_ratio when constant)",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "veRL requires one (or dynamic "
    "batches); micro-batches never change the gradient here, 8 fits a CPU",
    "actor_rollout_ref.rollout.name": "veRL requires one; 'auto' takes vLLM where installed",
    "actor_rollout_ref.rollout.gpu_memory_utilization": "the recipe's 0.4 shared GPUs with FSDP "
    "training; the rollout has GPUs of its own here",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": "one GPU per engine unless the "
    "recipe preset spreads one over the rollout GPUs",
    "actor_rollout_ref.rollout.enforce_eager": "None: eager on a CPU (compiling costs more than "
    "it saves there), compiled on a GPU as veRL",
    "actor_rollout_ref.rollout.val_kwargs.n": "eval samples several responses a question: "
    "per-question accuracy is what the hedging reward and the calibration report need",
    "actor_rollout_ref.rollout.val_kwargs.temperature": "eval samples at the training "
    "temperature (1.0) for the same reason; 0 gives veRL's greedy validation",
    "trainer.experiment_name": "the recipe names each run (sft50_rl_beta0.5_n16); here the run "
    "directory's name (RUN_NAME, which .env.example suggests naming the same way), so a run's "
    "stages group together without a second name to keep in step",
}

# The SFT trainer's keys (verl/trainer/sft_trainer.py, config sft_trainer_engine.yaml composed
# with its defaults list), in the same three tables.
SFT_UNITS: dict[str, str] = {
    "data.train_batch_size": "conversations per optimizer step, over all GPUs (gradient "
    "accumulation); an epoch is len(data) // it steps (partial batch dropped)",
    "data.micro_batch_size_per_gpu": "conversations per forward/backward on each GPU",
    "data.max_length": "tokens per conversation (prompt + answer)",
    "data.truncation": "error, or right (keep the first max_length tokens)",
    "data.train_max_samples": "first N conversations (-1: all)",
    "optim.lr": "peak learning rate",
    "optim.weight_decay": "AdamW's decoupled decay, on every parameter",
    "optim.betas": "AdamW (beta1, beta2)",
    "optim.clip_grad": "max gradient L2 norm, per optimizer step",
    "optim.lr_warmup_steps_ratio": "fraction of the run's optimizer steps, rounded down",
    "optim.lr_warmup_steps": "optimizer steps (<= 0: the ratio)",
    "optim.lr_scheduler_type": "constant or cosine, stepped per optimizer step",
    "optim.warmup_style": "deprecated name of lr_scheduler_type (null: unset)",
    "optim.min_lr_ratio": "fraction of optim.lr (cosine floor; null: 0)",
    "optim.num_cycles": "cosine waves after warm-up (0.5: a half-wave)",
    "trainer.total_epochs": "passes over the SFT data (one published folder each)",
    "trainer.seed": "seed (veRL's SFT trainer does not read it)",
}

SFT_VERL_DEFAULTS: dict[str, Any] = {
    "data.train_batch_size": 256,
    "data.micro_batch_size_per_gpu": 4,
    "data.max_length": 1024,
    "data.truncation": "error",
    "data.train_max_samples": -1,
    "data.messages_key": "messages",
    "model.path": "~/models/deepseek-llm-7b-chat",
    "model.enable_gradient_checkpointing": True,
    "model.lora_rank": 0,
    "engine": "fsdp",  # Hydra config-group choices: from the defaults list
    "optim": "fsdp",
    "engine.dtype": "bfloat16",
    "optim.optimizer": "AdamW",
    "optim.optimizer_impl": "torch.optim",
    "optim.lr": 1e-3,
    "optim.weight_decay": 0.01,
    "optim.betas": [0.9, 0.999],
    "optim.clip_grad": 1.0,
    "optim.lr_warmup_steps_ratio": 0.0,
    "optim.lr_warmup_steps": -1,
    "optim.lr_scheduler_type": "constant",
    "optim.min_lr_ratio": 0.0,
    "optim.num_cycles": 0.5,
    "optim.zero_indexed_step": True,
    "optim.warmup_style": None,
    "trainer.total_epochs": 4,
    "trainer.seed": 1,
    "trainer.logger": ["console", "wandb"],
    "trainer.project_name": "gsm8k-sft",
    "trainer.experiment_name": "test",
}

SFT_RECIPE: dict[str, Any] = {
    "optim.lr": 1e-5,
    "optim.weight_decay": 0.0,
    "trainer.total_epochs": 2,
    "trainer.logger": ["console", "tensorboard"],
    "trainer.project_name": "proactive_agent",
}

SFT_DEVIATIONS: dict[str, str] = {
    "data.train_batch_size": "default: one micro batch per GPU (the recipe's 4 x 4 GPUs = 16; "
    "the qwen3-8b preset sets 16); veRL's 256 fills no batch from the recipe's 50 "
    "conversations, and veRL drops the partial batch: 0 steps",
    "data.truncation": "'right' (keep the first max_length tokens): short max_length values "
    "keep CPU runs fast and must not stop them; 'error' is veRL's, checked before training",
    "model.path": "veRL's is a placeholder path; here the offline tiny model, or BASE_MODEL_PATH",
    "model.enable_gradient_checkpointing": "memory, not the loss: off for the CPU-sized "
    "defaults; the qwen3-8b recipe preset turns it on",
    "engine.dtype": "'auto': bf16 on a GPU as veRL and on a CPU with AMX, fp32 on other CPUs "
    "(bf16 autocast is slow there)",
    "trainer.seed": "veRL's SFT trainer never reads trainer.seed (its engine.seed is 42); 42, "
    "the recipe's seed, seeds data order and new tag embeddings here",
    "trainer.experiment_name": "the recipe names each run (sft50_rl_beta0.5_n16); here the run "
    "directory's name (RUN_NAME, which .env.example suggests naming the same way), so a run's "
    "stages group together without a second name to keep in step",
}

# Older spellings (veRL <= 0.6's fsdp_sft_trainer, or deprecated in 0.9.1) -> the 0.9.1 key
# whose default and unit they share; absent from 0.9.1's config: they must set what it sets.
SFT_ALIASES: dict[str, str] = {
    "model.partial_pretrain": "model.path",
    "optim.warmup_steps_ratio": "optim.lr_warmup_steps_ratio",
    "optim.lr_scheduler": "optim.lr_scheduler_type",
    "optim.grad_clip": "optim.clip_grad",
}


def default_note(table: str, key: str) -> str:
    """Where our default for `key` comes from when it is not veRL's, for `--help`: "" if it is
    veRL's. `table` is "rl" or "sft"."""
    recipe, deviations = (SFT_RECIPE, SFT_DEVIATIONS) if table == "sft" else (RECIPE, DEVIATIONS)
    if key in recipe:
        return "default: the users' recipe's, not veRL's"
    if key in deviations:
        return f"default differs from veRL's: {deviations[key]}"
    return ""

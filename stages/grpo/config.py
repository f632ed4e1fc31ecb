"""Typed config of the GRPO trainer worker. Defaults are the users' recipe (seed-pipeline.md)
except where noted; the schedule fields here become the published plan the rollout follows."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from proactive_rl.shared.config import StageConfig
from proactive_rl.shared.paths import absolute_spec
from proactive_rl.shared.peers import peer_quiet_timeout_field, peer_start_timeout_field
from proactive_rl.shared.trackers import TrackingConfig


class LossConfig(StageConfig):
    scale_advantages: Literal["group_std", "none"] = Field(
        "group_std",
        description="Divide group-centred rewards by the group std (GRPO) or not (Dr.GRPO).",
    )
    adv_eps: float = Field(1e-6, gt=0, description="Added to the group std before dividing.")
    clip_eps_low: float = Field(0.2, ge=0, lt=1, description="PPO clip: ratio >= 1 - eps_low.")
    clip_eps_high: float = Field(0.2, ge=0, description="PPO clip: ratio <= 1 + eps_high.")
    dual_clip: float = Field(
        3.0,
        gt=1,
        description="Dual-clip bound c (veRL clip_ratio_c): a token with a negative advantage A "
        "loses at most -c*A, however far its ratio grows. Always on, as in veRL.",
    )
    kl_type: Literal[
        "kl",
        "k1",
        "abs",
        "mse",
        "k2",
        "low_var_kl",
        "k3",
        "kl+",
        "k1+",
        "abs+",
        "mse+",
        "k2+",
        "low_var_kl+",
        "k3+",
    ] = Field(
        "low_var_kl",
        description="Estimator of KL(policy || reference) added to the loss, veRL's names: "
        "k1 (= kl) logp - ref, abs |logp - ref|, k2 (= mse) (logp - ref)^2/2, k3 (= low_var_kl) "
        "exp(ref - logp) - (ref - logp) - 1 (clamped); a trailing '+' keeps the value and takes "
        "k2's gradient (straight-through, unbiased).",
    )
    kl_coef: float = Field(
        0.001, ge=0, description="KL penalty coefficient; 0 = no reference model is loaded."
    )
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient.")
    agg: Literal[
        "token-mean",
        "token-sum",
        "seq-mean-token-sum",
        "seq-mean-token-mean",
        "seq-mean-token-sum-norm",
    ] = Field(
        "token-mean",
        description="How per-token losses are reduced over a mini-batch (veRL loss_agg_mode): "
        "sum / tokens, sum, sum / responses, mean of the per-response token means, "
        "sum / (responses * loss_scale_factor).",
    )
    loss_scale_factor: int | None = Field(
        None,
        ge=1,
        description="Divisor per response of seq-mean-token-sum-norm (veRL loss_scale_factor); "
        "None = max_new_tokens, the response horizon veRL divides by when it is unset.",
    )
    is_correction: Literal["none", "token", "sequence"] = Field(
        "none",
        description="Behaviour-policy correction: weight each token (or whole response) by "
        "min(exp(logp_old - logp_sampler), is_threshold); the sampler's logprobs come with the "
        "rollouts. 'none' (veRL's default: rollout correction off) trusts the sampler to be the "
        "policy being updated.",
    )
    is_threshold: float = Field(
        2.0, gt=0, description="Truncation C of the importance weight (veRL 2.0, TRL 3.0)."
    )
    mask_truncated: bool = Field(False, description="Give responses cut at max_new_tokens no loss.")


class LoraSettings(StageConfig):
    enabled: bool = Field(
        False,
        description="Train a LoRA adapter on the frozen starting model instead of every weight: "
        "each policy version is published as a small adapter folder (vLLM loads it as a new "
        "adapter, no weight reload) and the KL reference is the model with the adapter off.",
    )
    rank: int = Field(16, ge=1, le=512, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling alpha (the update is alpha/r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],  # fmt: skip
        min_length=1,
        description="Linear layers that get adapters (names inside the model).",
    )


class GrpoConfig(StageConfig):
    init_model: str = Field(
        "sft",
        description="Starting policy (also the KL reference): 'sft' = the last SFT epoch of this "
        "run, 'builtin:tiny', 'builtin:smollm2', or a local Hugging Face folder (no SFT: the "
        "baseline experiment).",
    )
    epochs: int = Field(10, ge=1, description="Passes over the RL train split (RL_EPOCHS).")
    prompts_per_step: int = Field(256, ge=1, description="Prompts per RL step (train batch).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many RL steps (None = all epochs)."
    )
    max_prompts: int | None = Field(
        None,
        ge=1,
        description="Train on the first N rows of the RL train split only (None = all). A small "
        "pool over several epochs lets a short run compare the same prompts early and late.",
    )
    n: int = Field(
        16,
        ge=2,
        description="Responses per prompt, the group size (RL_ROLLOUTS; veRL rollout.n). At least "
        "2: a group of one has a zero advantage, so nothing would be learned. (eval's n is "
        "another setting: samples per question.)",
    )
    max_staleness: int = Field(
        0,
        ge=0,
        description="Rollouts of step k may come from policy >= k - max_staleness "
        "(0 = strictly on-policy; 1 overlaps generation with training).",
    )
    rollout_workers: int = Field(
        1,
        ge=1,
        description="Rollout processes that split each step's prompts (in compose: "
        "ROLLOUT_WORKERS), published in the plan; each is started with its own rollout "
        "worker=0..N-1 and samples the prompts at positions p % N == worker. The trainer "
        "waits for every part of a step and merges them in worker order (docs/contract.md).",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    seed: int = Field(
        42,
        description="Seed of the prompt order and of the trainer. The sweep's `seed` axis sets "
        "it with every other stage's seed, as does "
        "the pipeline's SEED knob (env PROACTIVE_SEED).",
    )
    learning_rate: float = Field(1e-6, gt=0, description="Peak AdamW learning rate.")
    lr_scheduler: Literal["constant", "cosine"] = Field(
        "cosine",
        description="Learning-rate schedule after warm-up, stepped once per RL step (veRL's "
        "actor schedule): 'cosine' decays to min_lr_ratio x learning_rate over the run's RL "
        "steps, 'constant' holds the peak. veRL's default is 'constant'; ours is 'cosine' "
        "because the recipe sets a minimum rate (1e-7), which only the cosine reaches.",
    )
    min_lr_ratio: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Cosine floor as a fraction of learning_rate (the recipe's min lr 1e-7 = "
        "0.1 x 1e-6; veRL's default 0.0). 'constant' ignores it, as veRL does.",
    )
    num_cycles: float = Field(
        0.5,
        ge=0,
        description="Cosine waves over the RL steps after warm-up (0.5: one half-wave from the "
        "peak down to the floor).",
    )
    warmup_steps: int = Field(
        -1,
        ge=-1,
        description="Linear warm-up in RL steps (not optimizer updates): RL step k < W trains "
        "at k/W x learning_rate, so the first step at 0, as in veRL. <= 0: use warmup_ratio; "
        "when both are set, warmup_steps wins (veRL's rule).",
    )
    warmup_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Warm-up as a fraction of the run's RL steps, truncated to whole RL steps; "
        "used when warmup_steps <= 0.",
    )
    critic_warmup: int = Field(
        0,
        ge=0,
        description="veRL's trainer.critic_warmup: the first critic_warmup - 1 RL steps (veRL "
        "counts steps from 1 and updates once critic_warmup <= step) sample, score and publish "
        "as usual but do not update the policy nor advance the learning-rate schedule. There is "
        "no critic here, so they only delay training, as they do in veRL.",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="AdamW (beta1, beta2): veRL's and torch's defaults."
    )
    grad_clip: float = Field(1.0, gt=0, description="Max global gradient norm.")
    ppo_epochs: int = Field(1, ge=1, description="Passes over one step's rollouts.")
    mini_batch_prompts: int = Field(
        64, ge=1, description="Prompts (x n responses) per optimizer step."
    )
    micro_batch_size: int = Field(
        8, ge=1, description="Responses per forward/backward (gradient accumulation)."
    )
    micro_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="veRL's actor.ppo_max_token_len_per_gpu with actor.use_dynamic_bsz: tokens "
        "(prompt + response, per row, as veRL counts them) per forward/backward; a micro-batch "
        "takes responses in order while they fit, at least one. When set, micro_batch_size is "
        "ignored (as veRL ignores ppo_micro_batch_size_per_gpu). None: micro_batch_size rows. "
        "Memory only: the loss normalisers are fixed per mini-batch.",
    )
    log_prob_micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="veRL's rollout.log_prob_micro_batch_size_per_gpu: responses per forward of "
        "the no-grad pass that computes pi_old. None: micro_batch_size.",
    )
    log_prob_micro_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="veRL's rollout.log_prob_max_token_len_per_gpu with "
        "rollout.log_prob_use_dynamic_bsz: tokens (prompt + response) per forward of the pi_old "
        "pass, as micro_batch_tokens; log_prob_micro_batch_size is then ignored. None: fixed rows.",
    )
    loss: LossConfig = Field(default_factory=LossConfig)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="The update's compute dtype (float32 masters under bf16 autocast): auto = "
        "bf16 on a CUDA GPU with bf16 support and on a CPU with AMX, else fp32.",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    strategy: Literal["single", "ddp", "zero2", "zero3"] = Field(
        "single",
        description="How training spreads over this container's GPUs: one process; torch DDP; "
        "DeepSpeed ZeRO-2 or ZeRO-3 (one process per GPU, relaunched under torchrun).",
    )
    num_processes: int | None = Field(
        None, ge=1, description="Processes for ddp/zero* (None = one per visible GPU)."
    )
    cpu_offload: bool = Field(
        False,
        description="ZeRO: keep optimizer state in host memory (frees GPU memory, slower steps).",
    )
    state_every_steps: int = Field(
        1,
        ge=1,
        description="Save the optimizer state (for --resume) every N steps and at the end. "
        "Under ZeRO it is ~12 bytes per parameter (96 GB for 8B): save it less often there. "
        "--resume from a policy newer than the state restarts the optimizer (with a warning).",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    keep_policies: int | None = Field(
        None, ge=1, description="Keep only the newest N policy folders (None = keep all)."
    )
    publish_in_background: Literal["auto", "always", "never"] = Field(
        "auto",
        description="With max_staleness >= 1, write each policy from a snapshot in host memory "
        "in a background thread while the next step trains. auto: when the update runs on a "
        "GPU; on a CPU the write takes the core the update computes on (2-core EPYC: steps "
        "1.15x longer, docs/benchmarks.md). On-policy every policy is written at once: the "
        "rollout worker waits for it.",
    )
    wait_timeout: float = Field(
        3600.0, gt=0, description="Seconds to wait for a step's rollouts before failing."
    )
    peer_quiet_timeout: float = peer_quiet_timeout_field()
    peer_start_timeout: float = peer_start_timeout_field()

    @field_validator("init_model")
    @classmethod
    def _recorded_absolute(cls, spec: str) -> str:
        # recorded in configs/grpo.json, which eval reads from other folders later
        return spec if spec == "sft" else absolute_spec(spec)

    def reads_off_old_policy(self) -> bool:
        """Whether a training step takes pi_old of its first mini-batch from that update's own
        forward (ratio 1, as TRL with num_iterations=1) instead of a no-grad pass: with one
        pass over the rollouts and no importance weights, which need pi_old before training."""
        return self.ppo_epochs == 1 and self.loss.is_correction == "none"

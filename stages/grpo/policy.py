"""The model the GRPO trainer updates, its KL reference, and how a policy version is saved:
either every weight of the starting model (the default), or a LoRA adapter on the frozen
starting model (`lora.enabled`), published as a small adapter folder that names its base.
Imported only once training starts: torch and transformers at the top, peft only for LoRA."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import adapter_base, relative_base
from proactive_rl.stages.grpo.config import GrpoConfig


def master_dtype(config: GrpoConfig, compute: torch.dtype) -> torch.dtype:
    """The dtype the trainable weights are kept in. Full fine-tuning without ZeRO keeps float32
    masters and computes in bf16 under autocast: a bf16 weight of size ~0.02 moves in steps of
    ~1e-4, so an lr-1e-6 AdamW step on it rounds away and pure-bf16 training does not learn.
    ZeRO keeps float32 masters itself (of bf16 weights); LoRA adapters are float32 (peft)."""
    plain = not config.lora.enabled and config.strategy in ("single", "ddp")
    return torch.float32 if compute == torch.bfloat16 and plain else compute


def build_policy(
    config: GrpoConfig, start_dir: Path, init_dir: Path, dtype: torch.dtype
) -> torch.nn.Module:
    """The trainable policy as of `start_dir` (the starting model, or the policy --resume
    continues from)."""
    if config.lora.enabled:
        return lora_policy(config, start_dir, init_dir, dtype)
    if adapter_base(start_dir) is not None:
        raise UserError(
            f"{start_dir} is a LoRA adapter: this run trains with lora.enabled=true "
            "(set it again to --resume, or start over with --clean)"
        )
    return AutoModelForCausalLM.from_pretrained(start_dir, dtype=dtype)


def lora_policy(
    config: GrpoConfig, start_dir: Path, init_dir: Path, dtype: torch.dtype
) -> torch.nn.Module:
    """A LoRA adapter on the frozen starting model `init_dir`: a fresh one, or on --resume the
    adapter `start_dir`."""
    from peft import LoraConfig, PeftModel, get_peft_model

    resumed_adapter = adapter_base(start_dir) is not None
    if start_dir != init_dir and not resumed_adapter:
        raise UserError(
            f"{start_dir} is a whole model: this run trained every weight (lora.enabled=false); "
            "set it again to --resume, or start over with --clean"
        )
    base = AutoModelForCausalLM.from_pretrained(init_dir, dtype=dtype)
    if resumed_adapter:
        model = PeftModel.from_pretrained(base, start_dir, is_trainable=True)
    else:
        lora = config.lora
        model = get_peft_model(
            base,
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    if config.gradient_checkpointing:
        # reentrant checkpointing (a non-default choice in transformers 5) backpropagates only
        # from inputs that need a grad; the frozen embeddings' output does not by itself
        model.enable_input_require_grads()
    return model


def is_adapter(model: torch.nn.Module) -> bool:
    # without peft imported nothing can be a PeftModel: full fine-tuning never imports it
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


class AdapterOff(torch.nn.Module):
    """The KL reference of a LoRA policy: the same module with its adapter disabled, i.e. the
    frozen starting model, without a second copy of its weights."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self._policy = [policy]  # a list: not registered as a submodule (no second .parameters())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        policy = self._policy[0]
        with policy.disable_adapter():
            return policy(*args, **kwargs)


def reference_model(
    config: GrpoConfig, policy: torch.nn.Module, init_dir: Path, dtype: torch.dtype, device
) -> torch.nn.Module | None:
    """The frozen model the KL penalty compares with (None without a KL penalty)."""
    if config.loss.kl_coef <= 0:
        return None
    if is_adapter(policy):
        return AdapterOff(policy)
    # a full copy per process (not partitioned): a forward-only model in the training dtype
    ref = AutoModelForCausalLM.from_pretrained(init_dir, dtype=dtype).to(device)
    return ref.eval().requires_grad_(False)


def save_policy(
    model: torch.nn.Module,
    folder: Path,
    final: Path,
    init_dir: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    publish_dtype: torch.dtype | None = None,
) -> None:
    """Write a policy version into `folder` (staging for `final`): a whole Hugging Face folder,
    or for LoRA the adapter alone, naming its base relative to `final`."""
    if not is_adapter(model):
        if state_dict is None and publish_dtype is not None:
            # float32 masters are published in the compute dtype: what the sampler runs (tied
            # weights kept tied, so written once, as without the conversion)
            state_dict = host_snapshot(model, None, publish_dtype)
        model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
        return
    model.peft_config["default"].base_model_name_or_path = relative_base(init_dir, final)
    # save_embedding_layers=False: peft's "auto" may look the base model up on the Hub
    model.save_pretrained(
        folder, safe_serialization=True, state_dict=state_dict, save_embedding_layers=False
    )


def host_snapshot(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor] | None,
    publish_dtype: torch.dtype | None,
) -> dict[str, torch.Tensor]:
    """What save_policy would write for `model` now, copied to host memory, so that it can be
    written while the next step updates the weights in place: `state_dict` (ZeRO-3's gathered
    weights) or the model's own, in `publish_dtype`; a LoRA adapter's trainable weights only.
    Tensors that share storage (tied embeddings) stay shared, so the folder is the same."""
    if is_adapter(model):
        publish_dtype = None  # an adapter is saved as it trains (save_policy)
        if state_dict is None:
            state_dict = {n: p for n, p in model.named_parameters() if p.requires_grad}
    elif state_dict is None:
        state_dict = model.state_dict()
    copies: dict[tuple[Any, ...], torch.Tensor] = {}
    out = {}
    for name, tensor in state_dict.items():
        dtype = publish_dtype if publish_dtype is not None and tensor.is_floating_point() else None
        # empty tensors all start at address 0 without sharing anything
        key = (tensor.data_ptr(), tensor.dtype, tensor.shape) if tensor.numel() else (name,)
        if key not in copies:
            copies[key] = tensor.detach().to("cpu", dtype=dtype or tensor.dtype, copy=True)
        out[name] = copies[key]
    return out

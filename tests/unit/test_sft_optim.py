"""The SFT stage in veRL's units: veRL's SFT keys set our fields, the global batch splits into
whole micro batches or fails saying how to fix it, warm-up counts as veRL's does, and weight
decay reaches every parameter. (The runs that prove the optimizer steps and the LR schedule are
in tests/stages/test_sft.py.)"""

from __future__ import annotations

import pytest
import torch

from proactive_rl.shared.config import load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.verl import SFT_CONVERT
from proactive_rl.stages.sft.config import SftConfig
from proactive_rl.stages.sft.optim import (
    accumulation_steps,
    check_enough_data,
    global_batch,
    trainer_class,
    warmup_steps,
)

# veRL 0.9.1 SFT key=value -> (our field, the value it must hold)
MAPPED = {
    "data.train_batch_size=32": ("train_batch_size", 32),
    "data.micro_batch_size_per_gpu=2": ("per_device_batch_size", 2),
    "data.max_length=512": ("max_length", 512),
    "data.truncation=error": ("truncation", "error"),
    "model.path=/models/Qwen3-8B": ("base_model", "/models/Qwen3-8B"),
    "model.enable_gradient_checkpointing=true": ("gradient_checkpointing", True),
    "optim.lr=2e-5": ("learning_rate", 2e-5),
    "optim.weight_decay=0.01": ("weight_decay", 0.01),
    "optim.betas=[0.9,0.95]": ("betas", (0.9, 0.95)),
    "optim.clip_grad=0.5": ("grad_clip", 0.5),
    "optim.lr_warmup_steps_ratio=0.1": ("warmup_ratio", 0.1),
    "optim.lr_warmup_steps=7": ("warmup_steps", 7),
    "optim.lr_scheduler_type=cosine": ("lr_scheduler", "cosine"),
    "optim.min_lr_ratio=0.1": ("min_lr_ratio", 0.1),
    "optim.num_cycles=1.0": ("num_cycles", 1.0),
    "trainer.total_epochs=3": ("epochs", 3),
    "trainer.seed=7": ("seed", 7),
    # deprecated in 0.9.1, still accepted by veRL
    "optim.warmup_style=cosine": ("lr_scheduler", "cosine"),
    "optim.grad_clip=0.5": ("grad_clip", 0.5),
    # the older fsdp_sft_trainer's names, in veRL's example scripts
    "model.partial_pretrain=/models/Qwen3-8B": ("base_model", "/models/Qwen3-8B"),
    "optim.warmup_steps_ratio=0.1": ("warmup_ratio", 0.1),
    "optim.lr_scheduler=cosine": ("lr_scheduler", "cosine"),
}


@pytest.mark.parametrize("assignment", list(MAPPED))
def test_a_verl_sft_key_sets_its_field(assignment):
    field, value = MAPPED[assignment]
    config = load_config(SftConfig, None, [assignment], stage="sft")
    assert getattr(config, field) == value
    assert getattr(SftConfig(), field) != value  # the key did it, not the default


@pytest.mark.parametrize(
    ("key", "verl", "ours"),
    [
        ("data.train_max_samples", -1, None),  # veRL: -1 = every sample
        ("data.train_max_samples", 20, 20),
        ("optim.min_lr_ratio", None, 0.0),  # veRL's cosine reads null as 0
        ("engine.dtype", "bfloat16", "bf16"),
        ("optim.optimizer", "AdamW", "AdamW"),
        ("optim.zero_indexed_step", True, True),
        ("model.lora_rank", 0, 0),
        ("engine", "fsdp", "fsdp"),  # Hydra's group choice, as veRL's engine examples pass it
        ("optim", "fsdp", "fsdp"),
        ("data.messages_key", "messages", "messages"),
    ],
)
def test_sft_values_with_another_spelling_are_converted(key, verl, ours):
    assert SFT_CONVERT[key](verl) == ours


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("engine.dtype", "float16"),
        ("optim.optimizer", "AdamW8bit"),
        ("optim.optimizer_impl", "bitsandbytes.optim"),
        ("optim.zero_indexed_step", False),
        ("model.lora_rank", 32),
        ("engine", "megatron"),
        ("data.messages_key", "conversations"),
    ],
)
def test_sft_values_that_would_train_differently_are_refused(key, value):
    with pytest.raises(UserError, match="not supported"):
        SFT_CONVERT[key](value)


def test_the_global_batch_is_reached_by_gradient_accumulation():
    config = SftConfig(per_device_batch_size=4, train_batch_size=32)
    assert accumulation_steps(config, 1) == 8
    assert accumulation_steps(config, 2) == 4
    assert accumulation_steps(config, 8) == 1
    # None: one micro batch per process (the recipe's 4 x 4 GPUs = 16)
    assert global_batch(SftConfig(), 4) == 16 and accumulation_steps(SftConfig(), 4) == 1


def test_a_global_batch_of_partial_micro_batches_is_a_clear_error():
    config = SftConfig(per_device_batch_size=4, train_batch_size=20)
    with pytest.raises(UserError) as err:
        accumulation_steps(config, 2)
    message = str(err.value)
    assert "train_batch_size=20" in message and "4 x 2 = 8" in message
    assert "train_batch_size=16 or 24" in message
    with pytest.raises(UserError, match="train_batch_size=8"):
        accumulation_steps(SftConfig(per_device_batch_size=4, train_batch_size=6), 2)


def test_fewer_conversations_than_one_batch_is_a_clear_error():
    check_enough_data(16, 16)
    with pytest.raises(UserError, match="15 conversations do not fill one global batch"):
        check_enough_data(15, 16)


def test_warm_up_rounds_down_as_veRL_does():
    # veRL's FSDP engine: int(0.25 x 10) = 2 (transformers' own ratio would round up to 3)
    assert warmup_steps(SftConfig(warmup_ratio=0.25), 10) == 2
    assert warmup_steps(SftConfig(warmup_ratio=0.1), 9) == 0
    # a positive lr_warmup_steps wins over the ratio; <= 0 means "use the ratio"
    assert warmup_steps(SftConfig(warmup_ratio=0.25, warmup_steps=5), 10) == 5
    assert warmup_steps(SftConfig(warmup_ratio=0.25, warmup_steps=0), 10) == 2


def test_weight_decay_reaches_every_parameter_as_in_veRL():
    """veRL gives AdamW all parameters with one weight decay; the Trainer would spare biases
    and norm weights."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    names = trainer_class(SftConfig(), 4).get_decay_parameter_names(None, model)
    assert sorted(names) == sorted(name for name, _ in model.named_parameters())
    assert "0.bias" in names and "1.weight" in names

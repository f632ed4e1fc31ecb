"""What dtype a stage computes in, from its `precision` setting ('auto', 'bf16' or 'fp32').

Generation and training decide 'auto' apart: training (SFT, the GRPO update) runs bf16 autocast
over float32 master weights wherever the hardware multiplies bf16 natively, a CUDA GPU that has
it or a CPU with AMX tiles (measured on a 2-core Xeon: a bf16 GEMM 7.8x the fp32 one, an SFT step
of SmolLM2-135M 1.75x faster, docs/benchmarks.md), while generation stays float32 on every CPU
so that sampled logprobs, and the benchmarks read from them, do not depend on the CPU model."""

from __future__ import annotations

import torch


def cpu_has_amx() -> bool:
    """The CPU has AMX tiles (Intel Sapphire Rapids and later): oneDNN runs bf16 GEMMs on them.
    On a CPU without them bf16 autocast is slower than float32 (356 s against 35 s for one GRPO
    step on an AVX2 EPYC), so 'auto' must not pick it there."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x
    return bool(probe and probe())


def cuda_has_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def pick_dtype(precision: str) -> torch.dtype:
    """The dtype generation runs in: 'auto' is bf16 on a CUDA GPU that has it, else float32."""
    if precision == "bf16" or (precision == "auto" and cuda_has_bf16()):
        return torch.bfloat16
    return torch.float32


def training_dtype(precision: str) -> torch.dtype:
    """The dtype a training forward and backward compute in (autocast over float32 masters):
    'auto' is bf16 on a CUDA GPU that has it, as veRL's engine.dtype, and on a CPU with AMX."""
    if precision == "auto" and not torch.cuda.is_available() and cpu_has_amx():
        return torch.bfloat16
    return pick_dtype(precision)

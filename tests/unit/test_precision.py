"""precision=auto (engine/precision.py): training computes in bf16 where the hardware multiplies
it natively (a CUDA GPU with bf16, a CPU with AMX), generation in float32 on every CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from proactive_rl.engine import precision


def test_amx_probe_agrees_with_the_kernel_flags() -> None:
    """The real probe on this machine, against what Linux says the CPU has."""
    flags = Path("/proc/cpuinfo").read_text().split()
    assert precision.cpu_has_amx() == ("amx_tile" in flags)


@pytest.mark.parametrize("amx", [True, False])
def test_auto_trains_in_bf16_on_a_cpu_with_amx_and_generates_in_float32(
    monkeypatch: pytest.MonkeyPatch, amx: bool
) -> None:
    """The hardware flag is set by hand (a CPU of the other kind cannot be had here); the
    decisions around it are the real functions'. The test above checks the flag itself."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    assert precision.training_dtype("auto") == (torch.bfloat16 if amx else torch.float32)
    assert precision.pick_dtype("auto") == torch.float32
    # an explicit setting is obeyed whatever the CPU
    for fn in (precision.training_dtype, precision.pick_dtype):
        assert fn("fp32") == torch.float32
        assert fn("bf16") == torch.bfloat16

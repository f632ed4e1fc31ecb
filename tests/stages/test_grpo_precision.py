"""precision=bf16 without ZeRO: the trainer keeps float32 master weights and computes in bf16
(autocast), because an AdamW step of lr 1e-6 on a bf16 weight rounds away; the policies are
published in bf16 and the masters kept for --resume. Checked on the CPU (CPU autocast has
bf16)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.policy import master_dtype
from proactive_rl.stages.grpo.update import train_step
from tests.conftest import proactive
from tests.stages.test_grpo_parallel import N, rollout_rows
from tests.stages.test_rl_loop import run_rl


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, torch.float32),
        ({"strategy": "ddp"}, torch.float32),
        ({"strategy": "zero3"}, torch.bfloat16),  # DeepSpeed keeps the float32 masters
        ({"lora": {"enabled": True}}, torch.bfloat16),  # the frozen base; adapters are fp32
    ],
)
def test_which_weights_get_float32_masters(settings, expected):
    assert master_dtype(GrpoConfig(**settings), torch.bfloat16) is expected
    assert master_dtype(GrpoConfig(**settings), torch.float32) is torch.float32


def step_moves(tiny_model, weights: torch.dtype) -> float:
    """The fraction of weights that one GRPO step at lr 1e-6 changes, computing in bf16."""
    torch.manual_seed(0)
    cfg = GrpoConfig(n=N, mini_batch_prompts=5, micro_batch_size=8, learning_rate=1e-6)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=weights)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    rows = rollout_rows(model.config.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        train_step(model, None, optimizer, scheduler, rows, cfg, 1.0, 8, torch.device("cpu"), N)
    pairs = list(zip(model.parameters(), before, strict=True))
    changed = sum(int((p.detach() != b).sum()) for p, b in pairs)
    return changed / sum(b.numel() for _, b in pairs)


def test_float32_masters_take_steps_that_bf16_weights_round_away(tiny_model):
    masters, bf16 = step_moves(tiny_model, torch.float32), step_moves(tiny_model, torch.bfloat16)
    assert masters > 0.9
    assert bf16 < 0.1  # most bf16 weights did not move at all: why the masters are float32


@pytest.mark.slow
def test_bf16_runs_train_float32_masters_and_publish_bf16(tmp_path, tiny_model):
    import shutil

    from tests.conftest import REPO

    shutil.copytree(REPO / "data" / "sample", tmp_path / "data" / "sample")
    paths = run_rl(tmp_path, tiny_model, max_staleness=0, grpo_args=("--set", "precision=bf16"))
    log = (paths.root / "grpo.log").read_text()
    assert "weights float32, compute bfloat16" in log
    for version in (0, 3):
        with safe_open(str(paths.policy(version) / "model.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    lines = [json.loads(x) for x in (paths.logs("grpo") / "metrics.jsonl").read_text().splitlines()]
    assert all(m["opt/grad_norm"] > 0 for m in lines)

    # --resume state keeps the float32 masters: finer than the bf16 policy they publish
    state = torch.load(paths.grpo_optimizer_state(3), weights_only=True)
    masters = state["masters"]
    assert {v.dtype for v in masters.values()} == {torch.float32}
    assert any(not torch.equal(v, v.to(torch.bfloat16).float()) for v in masters.values())
    again = proactive(
        "grpo", "--run-dir", str(paths.root), "--set", f"init_model={tiny_model}",
        "--set", "precision=bf16", "--resume", cwd=tmp_path,
    )  # fmt: skip
    assert "resumed the float32 master weights of policy 3" in again.stdout + again.stderr

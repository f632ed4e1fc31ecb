"""The GRPO update spread over processes (strategy ddp; gloo on the CPU) gives the same policy
as one process: the groups are dealt out whole, each process's loss is its share of the global
mini-batch loss, and a process with fewer micro-batches pads with zero-loss passes. DeepSpeed
ZeRO uses the same sharding, scaling and padding (tests/gpu cover its engine on a GPU)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from transformers import AutoModelForCausalLM

from proactive_rl.grpo.config import GrpoConfig
from proactive_rl.grpo.update import train_step
from proactive_rl.parallel import Parallel

N = 4  # responses per prompt


def rollout_rows(vocab: int, groups: int = 5, seed: int = 0) -> list[dict]:
    """Rows as the rollout worker writes them, ordered by group, with uneven lengths."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for gid in range(groups):
        prompt = torch.randint(
            3, vocab, (int(torch.randint(3, 8, (1,), generator=g)),), generator=g
        )
        for k in range(N):
            length = int(torch.randint(1, 9, (1,), generator=g))
            rows.append(
                {
                    "group_id": 10 + gid,
                    "sample_index": k,
                    "prompt_ids": prompt.tolist(),
                    "response_ids": torch.randint(3, vocab, (length,), generator=g).tolist(),
                    "sampling_logprobs": (-torch.rand(length, generator=g) * 3).tolist(),
                    "reward": float(torch.rand(1, generator=g) > 0.5),
                    "reward_parts": {"correct": 1.0},
                    "finish_reason": "stop" if length < 8 else "length",
                }
            )
    return rows


def config() -> GrpoConfig:
    return GrpoConfig(
        n=N,
        mini_batch_prompts=2,  # 5 groups -> mini-batches of 2, 2, 1 groups: uneven shards
        micro_batch_size=3,
        ppo_epochs=2,
        learning_rate=0.5,
        loss={"kl_coef": 0.05, "is_correction": "token", "entropy_coef": 0.01},
    )


def one_step(model_dir: str, rank: int, world: int, out: str, port: int) -> None:
    if world > 1:
        os.environ.update(
            LOCAL_RANK=str(rank),
            RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    torch.manual_seed(0)
    cfg = config()
    par = Parallel.start("ddp" if world > 1 else "single")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    noise = torch.Generator().manual_seed(1)  # the same on every process whatever else ran
    with torch.no_grad():
        for p in ref.parameters():  # a reference that differs, so KL has a gradient
            p.add_(torch.randn(p.shape, generator=noise, dtype=p.dtype) * 0.05)
    # SGD: the parameters move by exactly the gradient, so comparing them compares gradients
    # (Adam's first step divides by |g| + eps and turns summation-order noise in near-zero
    # gradients into visible differences)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    module = par.wrap(model, optimizer, cfg)
    rows = rollout_rows(model.config.vocab_size)
    stats = train_step(module, ref, optimizer, scheduler, rows, cfg, 1.0, 8, par.device, N, par=par)
    if par.is_main:
        torch.save(
            {"params": [p.detach().clone() for p in model.parameters()], "stats": stats}, out
        )
    par.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_ddp_processes_make_the_same_update_as_one(tiny_model, tmp_path, world):
    one_step(str(tiny_model), 0, 1, str(tmp_path / "single.pt"), 0)
    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=one_step, args=(str(tiny_model), r, world, str(tmp_path / "ddp.pt"), port)
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    single = torch.load(tmp_path / "single.pt")
    spread = torch.load(tmp_path / "ddp.pt")
    moved = 0.0
    for a, b in zip(single["params"], spread["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    original = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64)
    for a, p in zip(single["params"], original.parameters(), strict=True):
        moved = max(moved, float((a - p.detach()).abs().max()))
    assert moved > 1e-4  # the step did change the policy
    for key, value in single["stats"].items():
        assert spread["stats"][key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key
    assert single["stats"]["loss/kl"] > 0 and single["stats"]["is/weight_mean"] > 0

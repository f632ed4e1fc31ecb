"""The GRPO update spread over processes gives the same policy as one process: the groups are
dealt out whole, each process's loss is its share of the global mini-batch loss, and a process
with fewer micro-batches (by rows or by token budget) pads with zero-loss passes. Checked for
DDP (gloo, float64: to 1e-9) and for DeepSpeed ZeRO-2 and ZeRO-3 (DeepSpeed's CPU accelerator
over gloo, float32)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from transformers import AutoModelForCausalLM

from proactive_rl.engine.parallel import Parallel
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.update import train_step
from tests.ports import free_port

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


def config(cpu_offload: bool = False, settings: dict | None = None) -> GrpoConfig:
    return GrpoConfig(
        **{"cpu_offload": cpu_offload, **(settings or {})},
        n=N,
        mini_batch_prompts=2,  # 5 groups -> mini-batches of 2, 2, 1 groups: uneven shards
        micro_batch_size=3,
        ppo_epochs=2,
        learning_rate=0.5,
        loss={"kl_coef": 0.05, "is_correction": "token", "entropy_coef": 0.01},
    )


def one_step(
    model_dir: str,
    rank: int,
    world: int,
    out: str,
    port: int,
    strategy: str = "ddp",
    cpu_offload: bool = False,
    settings: dict | None = None,
) -> None:
    if world > 1:
        os.environ.update(
            LOCAL_RANK=str(rank),
            RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    torch.manual_seed(0)
    cfg = config(cpu_offload, settings)
    par = Parallel.start(strategy if world > 1 else "single")
    # float64 shows the maths is exact; DeepSpeed's ZeRO keeps float32 (or bf16) partitions
    dtype = torch.float32 if strategy.startswith("zero") else torch.float64
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
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
    whole = par.full_state_dict(model)  # ZeRO-3 gathers the partitions (every rank takes part)
    if par.is_main:
        params = whole if whole is not None else dict(model.named_parameters())
        torch.save(
            {"params": {k: v.detach().clone() for k, v in params.items()}, "stats": stats}, out
        )
    par.close()


def spread_step(
    model_dir, world: int, out, strategy: str, cpu_offload: bool = False, settings=None
) -> None:
    port = free_port()
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=one_step,
            args=(model_dir, r, world, str(out), port, strategy, cpu_offload, settings),
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0


def compare(single, spread, original, atol: float, rel: float) -> None:
    moved = 0.0
    for name, value in single["params"].items():
        torch.testing.assert_close(spread["params"][name], value, rtol=0, atol=atol)
        moved = max(moved, float((value - original[name].detach()).abs().max()))
    assert moved > 1e-4  # the step did change the policy
    for key, value in single["stats"].items():
        assert spread["stats"][key] == pytest.approx(value, rel=rel, abs=atol, nan_ok=True), key
    assert single["stats"]["loss/kl"] > 0 and single["stats"]["is/weight_mean"] > 0


# token budgets (veRL's use_dynamic_bsz) give the processes different micro-batch counts
BUDGETS = {"micro_batch_tokens": 20, "log_prob_micro_batch_tokens": 12}


@pytest.mark.slow
@pytest.mark.parametrize(("world", "settings"), [(2, None), (3, None), (2, BUDGETS)])
def test_ddp_processes_make_the_same_update_as_one(tiny_model, tmp_path, world, settings):
    one_step(str(tiny_model), 0, 1, str(tmp_path / "single.pt"), 0)  # fixed micro_batch_size
    spread_step(str(tiny_model), world, tmp_path / "ddp.pt", "ddp", settings=settings)
    original = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64)
    compare(
        torch.load(tmp_path / "single.pt"),
        torch.load(tmp_path / "ddp.pt"),
        dict(original.named_parameters()),
        atol=1e-9,
        rel=1e-6,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "cpu_offload", "settings"),
    [
        ("zero2", False, None),
        ("zero3", False, None),
        ("zero3", True, None),
        ("zero3", False, BUDGETS),
    ],
)
def test_zero_processes_make_the_same_update_as_one(
    tiny_model, tmp_path, strategy, cpu_offload, settings, monkeypatch
):
    monkeypatch.setenv("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    one_step(str(tiny_model), 0, 1, str(tmp_path / "single.pt"), 0, strategy)
    spread_step(str(tiny_model), 2, tmp_path / "zero.pt", strategy, cpu_offload, settings)
    original = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    compare(
        torch.load(tmp_path / "single.pt"),
        torch.load(tmp_path / "zero.pt"),
        dict(original.named_parameters()),
        atol=1e-5,
        rel=1e-4,
    )

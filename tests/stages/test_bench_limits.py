"""scripts/bench_limits.py (make bench-limits): the roofline arithmetic on constructed calls, the
model's shapes against the real transformers model, the machine figures at small sizes, and the
whole run at --quick size on the tiny model (the real vLLM engine with its worker on every core,
ours beside it one step off-policy, the handoff). The figures themselves are SmolLM2's, in
docs/benchmarks.md."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import bench_limits  # noqa: E402


def test_roofline_is_prefill_then_per_step_the_longer_of_reading_and_computing():
    # 10 prompt tokens at 10 FLOPs each on 100 FLOP/s: 1 s of prefill. Decoding two sequences
    # of 3 and 1 tokens, reading 100 bytes at 1000 B/s (0.1 s) a step: step 0 computes for
    # both (2 x 10 / 100 = 0.2 s, longer than the read), steps 1 and 2 are bound by the read.
    seconds = bench_limits.roofline_s([3, 1], 10, 100, 10, 1000 / 1e9, 100 / 1e9)
    assert seconds == pytest.approx(1.0 + 0.2 + 0.1 + 0.1)
    assert bench_limits.roofline_s([], 0, 100, 10, 1.0, 1.0) == 0


def test_the_linear_shapes_are_the_real_models_linear_layers(tiny_model):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads((tiny_model / "config.json").read_text())
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model))
    linear = sorted(
        (m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    assert sorted(bench_limits.linear_shapes(config)) == linear


def test_the_machine_figures_are_measured_at_each_thread_count():
    shapes = [(64, 128), (128, 64)]
    assert 0 < bench_limits.bandwidth_gbs(1, mib=8) < math.inf
    assert 0 < bench_limits.gemm_gflops(shapes, 16, 1) < math.inf


def test_balancing_scales_the_prompts_by_generate_over_update():
    # the update twice the generation: half the prompts; half of it: twice; never below one
    assert bench_limits.balancing_prompts(4, 5.0, 10.0) == 2
    assert bench_limits.balancing_prompts(2, 10.0, 5.0) == 4
    assert bench_limits.balancing_prompts(2, 1.0, 30.0) == 1
    assert bench_limits.is_balanced({"generate_s": 10.0, "update_s": 12.5})
    assert not bench_limits.is_balanced({"generate_s": 4.7, "update_s": 11.0})


def test_auto_runs_again_at_the_prompts_that_even_it_out_and_keeps_the_tries(monkeypatch, tmp_path):
    """The decision only: balanced_run is replaced by constructed figures (an update that takes
    as long as its prompts, a generation of 5 s whatever the batch), because a real run costs
    minutes; the real balanced run is the quick run's below."""
    calls = []

    def run(model_dir, out, prompts, n, steps, tokens, params, gflops):
        calls.append((prompts, n, tokens))
        return {"settings": f"{prompts}x{n}", "generate_s": 5.0, "update_s": 2.5 * prompts,
                "balanced": bench_limits.is_balanced(
                    {"generate_s": 5.0, "update_s": 2.5 * prompts})}  # fmt: skip

    monkeypatch.setattr(bench_limits, "balanced_run", run)
    monkeypatch.setattr(bench_limits, "PROBE", (4, 2, 128))
    result = bench_limits.balanced_case(tmp_path, tmp_path, "auto", 6, 1, 1.0)
    assert calls == [(4, 2, 128), (2, 2, 128)]
    assert result["balanced"] and result["tries"][0]["update_s"] == 10.0
    # already balanced at the probe, or given explicitly: one run
    calls.clear()
    monkeypatch.setattr(bench_limits, "PROBE", (2, 2, 128))
    assert bench_limits.balanced_case(tmp_path, tmp_path, "auto", 6, 1, 1.0)["balanced"]
    assert bench_limits.balanced_case(tmp_path, tmp_path, "3x2x64", 6, 1, 1.0)["settings"] == "3x2"
    assert calls == [(2, 2, 128), (3, 2, 64)]


def test_at_one_prompt_auto_lengthens_the_responses_and_stops_after_three_runs(
    monkeypatch, tmp_path
):
    """The decision only, on constructed figures as above: a generation of 0.025 s a token at any
    batch, an update of 4 s a step that writes the policy plus 0.02 s a token a prompt (an
    EPYC's shape at 1 prompt x 2, 2026-12-05), which one prompt does not even out at 256
    tokens but does at 512; and one that never balances ends after BALANCE_TRIES runs."""
    calls = []

    def run(model_dir, out, prompts, n, steps, tokens, params, gflops):
        calls.append((prompts, tokens))
        figures = {"generate_s": 0.025 * tokens, "update_s": 4.0 + 0.02 * tokens * prompts}
        return {"settings": f"{prompts}x{n}x{tokens}", **figures,
                "balanced": bench_limits.is_balanced(figures)}  # fmt: skip

    monkeypatch.setattr(bench_limits, "balanced_run", run)
    monkeypatch.setattr(bench_limits, "PROBE", (2, 2, 256))
    result = bench_limits.balanced_case(tmp_path, tmp_path, "auto", 6, 1, 1.0)
    assert calls == [(2, 256), (1, 256), (1, 512)]
    assert result["balanced"] and result["settings"] == "1x2x512"
    assert [t["settings"] for t in result["tries"]] == ["2x2x256", "1x2x256"]

    calls.clear()
    monkeypatch.setattr(
        bench_limits, "balanced_run",
        lambda *a: {**run(*a), "update_s": 100.0, "balanced": False},
    )  # fmt: skip
    result = bench_limits.balanced_case(tmp_path, tmp_path, "auto", 6, 1, 1.0)
    assert len(calls) == bench_limits.BALANCE_TRIES and not result["balanced"]
    assert len(result["tries"]) == bench_limits.BALANCE_TRIES - 1


@pytest.mark.slow
def test_the_quick_run_writes_every_figure_beside_its_goal(tmp_path):
    out = tmp_path / "limits"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_limits.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "limits.json").read_text())
    layouts = {(r["reserved_cpus"], r["engine_threads"]) for r in report["generation"]}
    # --quick runs vLLM's worker on every core (vllm.cpu_reserved_cores=0) where there are
    # several, as the engine itself reports: the roofline then uses the all-core figures
    cores = len(os.sched_getaffinity(0))
    assert layouts == ({("0", cores)} if cores > 1 else {("default", 1)})
    for row in report["generation"]:
        assert row["prompts_x_n"] in ("2x1", "2x2")
        # a real call cannot beat the machine's limit by much (the roofline leaves out attention
        # and sampling, so it is an upper bound on the speed)
        assert 0 < row["fraction_of_roofline"] < 1.5, row
    balanced = report["balanced"]
    assert balanced["generate_s"] > 0 and balanced["update_s"] > 0
    assert balanced["overlap_ratio"] > 0.5 and 0 < balanced["update_mfu"] < 1.5
    assert balanced["balanced"] == bench_limits.is_balanced(balanced)
    # the balanced run trains without the KL term: no reference forward, none counted
    grpo = json.loads((out / "balanced" / "configs" / "grpo.json").read_text())
    assert grpo["loss"]["kl_coef"] == 0
    assert report["handoff"]["handoff/ratio_over_raw_copy"] > 0
    assert report["handoff"]["handoff/ratio_over_reused_copy"] > 0
    # the balanced run's responses all run to its new tokens (ignore_eos)
    rollout = json.loads((out / "balanced" / "configs" / "rollout.json").read_text())
    assert rollout["sampling"]["ignore_eos"] is True
    table = (out / "limits.md").read_text()
    for goal in bench_limits.GOALS:
        assert goal in table

"""scripts/bench_peers.py (make bench-peers): TRL's GRPOTrainer (the release in our lock, its
real trainer) and our pipeline (grpo beside the real vLLM engine) on the same job. At --quick
size on the tiny model: both run, the same-work check compares their token counts, and the
report, table and plot are written. The speed figures are SmolLM2's (docs/benchmarks.md); the
pure pieces (TRL's groups, the ratio over repeats) are checked below without a run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import bench_peers  # noqa: E402


@pytest.mark.slow
def test_trl_and_ours_run_the_same_job_and_are_compared(tmp_path):
    out = tmp_path / "peers"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_peers.py"), "--quick", "--out", str(out),
         "--runs", "trl,ours-staleness1", "--repeats", "1"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "peers.json").read_text())
    assert set(report["runs"]) == {"trl", "ours-staleness1"}
    for name, run in report["runs"].items():
        assert run["steps"] == 2, name  # --quick: 2 optimizer steps each
        assert run["generated_tokens_per_s"] > 0 and run["peak_memory_gb"] > 0.1, name
    # the overlap of ours: both parts timed, the step at least the longer of them (it waits)
    off = report["runs"]["ours-staleness1"]
    assert off["generate_s"] > 0 and off["update_s"] > 0 and off["overlap_ratio"] > 0.5
    assert "overlap_ratio" not in report["runs"]["trl"]
    # where TRL's step goes: its generate calls timed apart from the rest of the step
    trl = report["runs"]["trl"]
    assert 0 < trl["generate_s"] < trl["step_s"] and trl["update_s"] > 0
    assert trl["generate_s"] + trl["update_s"] == pytest.approx(trl["step_s"], abs=0.02)
    ours = report["vs_trl"]["ours-staleness1"]
    # the same questions in the same order, cut at the same length: the token counts agree
    assert ours["same_work"], ours["work_ratios"]
    assert ours["steps_per_hour_ratio"] > 0 and ours["repeats"] == 1
    trl_steps = (out / "trl" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in trl_steps] == [0, 1]
    assert (out / "peers.png").stat().st_size > 0
    assert "| ours-staleness1 |" in (out / "peers.md").read_text()


def test_trl_batches_are_scored_as_whole_groups_with_our_reward():
    reward = bench_peers.trl_reward(2, "proactive", {"beta": 0.5})
    prompts = [[{"role": "user", "content": "q1"}]] * 2 + [[{"role": "user", "content": "q2"}]] * 2
    completions = [[{"role": "assistant", "content": text}] for text in
                   ["Paris", "<proactive>unsure</proactive> Lyon", "4", "5"]]  # fmt: skip
    scores = reward(prompts, completions, ["Paris", "Paris", "4", "4"], ["s"] * 4)
    # group 1: one right of two (group_acc 0.5), the hedge earns beta * (1 - 0.5) + its bonus
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(0.5 * 0.5 + 0.05)
    assert scores[2:] == [pytest.approx(1.0), pytest.approx(0.0)]
    with pytest.raises(RuntimeError, match="whole groups"):
        reward(prompts[1:3] * 2, completions, ["Paris"] * 4, ["s"] * 4)


def test_the_ratio_is_the_median_over_repeats_with_its_spread():
    def run(step_s: float, tokens: float) -> dict:
        return {"steps_per_hour": 3600 / step_s, "generated_tokens_per_step": tokens,
                "trained_tokens_per_step": 2 * tokens}  # fmt: skip

    repeats = [
        {"trl": run(10, 100), "ours-staleness0": run(5, 100)},
        {"trl": run(10, 100), "ours-staleness0": run(4, 102)},
        {"trl": run(12, 100), "ours-staleness0": run(4, 120)},
    ]
    ours = bench_peers.compare(repeats, 0.05)["ours-staleness0"]
    assert ours["steps_per_hour_ratio"] == 2.5  # ratios 2.0, 2.5, 3.0
    assert (ours["steps_per_hour_ratio_min"], ours["steps_per_hour_ratio_max"]) == (2.0, 3.0)
    assert not ours["same_work"]  # the third repeat generated 20% more: 7% over the three
    assert ours["work_ratio"]["generated_tokens_per_step"] == pytest.approx(1.073, abs=1e-3)
    assert bench_peers.compare(repeats[:2], 0.05)["ours-staleness0"]["same_work"]
    # one draw 8% long, another 7% short: each repeat off by more than 5%, the work the same
    lucky = [
        {"trl": run(10, 100), "ours-staleness0": run(5, 108)},
        {"trl": run(10, 100), "ours-staleness0": run(5, 93)},
    ]
    ours = bench_peers.compare(lucky, 0.05)["ours-staleness0"]
    assert ours["same_work"] and ours["work_ratios"][0]["generated_tokens_per_step"] == 1.08


def test_each_repeat_samples_with_a_seed_of_its_own_on_both_sides(monkeypatch, tmp_path):
    """The repeats' seeds as the runs receive them, and --trl-memory in the settings TRL's
    process reads (the runs themselves replaced: their real run is the slow test above)."""
    seen: list[tuple[str, int]] = []
    memory: set[str] = set()

    def one_run(model_dir, data, folder, settings, name):
        seen.append((name, settings["seed"]))
        memory.add(settings["trl_memory"])
        summary = {"steps_per_hour": 100.0, "step_s": 36.0}
        summary |= {key: 10.0 for key in bench_peers.WORK}
        return [{"step": 0, "reward": 0.0, "seconds": 36.0}], summary

    monkeypatch.setattr(bench_peers, "one_run", one_run)
    monkeypatch.setattr(bench_peers, "prepared_data", lambda out: out)
    monkeypatch.setattr(bench_peers, "plot", lambda out, curves: out / "peers.png")
    args = ["--model", "builtin:tiny", "--out", str(tmp_path), "--runs", "trl,ours-staleness1"]
    args += ["--trl-memory", "kept"]
    result = CliRunner().invoke(bench_peers.run_main, [*args, "--repeats", "3", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert seen == [(name, seed) for seed in (7, 8, 9) for name in ("trl", "ours-staleness1")]
    assert memory == {"kept"}
    assert json.loads((tmp_path / "peers.json").read_text())["settings"]["seed"] == 7


def test_the_overlap_ratio_is_over_the_longer_part_off_policy_and_the_sum_on_policy():
    def steps(seconds: float) -> list[dict]:
        one = {"seconds": seconds, "generate_s": 3.0, "update_s": 1.0, "reward": 0.0,
               "generated_tokens": 10, "trained_tokens": 20}  # fmt: skip
        return [{**one, "step": 0, "seconds": 99.0}, {**one, "step": 1}, {**one, "step": 2}]

    # step 0 (engine start) is left out; off-policy the update hides behind generation
    off = bench_peers.summary(steps(3.3), 1.0, staleness=1)
    assert off["overlap_ratio"] == pytest.approx(1.1) and off["step_s"] == 3.3
    on = bench_peers.summary(steps(4.0), 1.0, staleness=0)
    assert on["overlap_ratio"] == pytest.approx(1.0)
    assert "overlap_ratio" not in bench_peers.summary(steps(4.0), 1.0, staleness=None)

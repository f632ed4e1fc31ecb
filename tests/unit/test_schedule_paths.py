"""The RL schedule (shared/schedule.py) and the volume layout (shared/paths.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proactive_rl.shared.paths import (
    EPOCH_RE,
    STEP_RE,
    DataPaths,
    RunPaths,
    absolute_spec,
    epoch_name,
    numbered_children,
    record_path,
    resolve_recorded,
    step_name,
)
from proactive_rl.shared.publish import read_json
from proactive_rl.shared.schedule import Plan, read_plan, write_plan


def plan(train_rows=10, prompts_per_step=4, epochs=2, seed=0, max_staleness=0) -> Plan:
    return Plan("plan-1", train_rows, "sha", prompts_per_step, 8, epochs, seed, max_staleness)


SIZE_CASES = [
    # (train_rows, prompts_per_step, epochs) -> (batch, steps_per_epoch, total_steps)
    ((10, 4, 2), (4, 2, 4)),  # drop_last: 2 rows unused per epoch
    ((8, 4, 1), (4, 2, 2)),
    ((9, 2, 3), (2, 4, 12)),
    ((4, 4, 3), (4, 1, 3)),
    ((3, 10, 2), (3, 1, 2)),  # batch larger than the data: one step with every row
    ((1, 256, 5), (1, 1, 5)),
    ((0, 4, 3), (0, 0, 0)),  # empty split: no steps (grpo turns that into a UserError)
]


@pytest.mark.parametrize("sizes, expected", SIZE_CASES)
def test_plan_sizes(sizes, expected):
    train_rows, prompts_per_step, epochs = sizes
    p = plan(train_rows, prompts_per_step, epochs)
    assert (p.batch, p.steps_per_epoch, p.total_steps) == expected


@pytest.mark.parametrize("sizes, expected", SIZE_CASES)
def test_step_prompts_cover_an_epoch_without_repeats(sizes, expected):
    p = plan(*sizes)
    batch, steps_per_epoch, _ = expected
    for epoch in range(p.epochs):
        steps = range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        used = [i for step in steps for i in p.step_prompts(step)]
        assert all(len(p.step_prompts(s)) == batch for s in steps)
        assert len(used) == len(set(used)) == batch * steps_per_epoch
        assert set(used) <= set(range(p.train_rows))


def test_batch_larger_than_data_uses_every_row():
    p = plan(train_rows=3, prompts_per_step=10, epochs=2)
    assert sorted(p.step_prompts(0)) == [0, 1, 2]
    assert sorted(p.step_prompts(1)) == [0, 1, 2]


def test_step_prompts_are_deterministic():
    a, b = plan(train_rows=50, prompts_per_step=5, epochs=3), plan(50, 5, 3)
    for step in range(a.total_steps):
        assert a.step_prompts(step) == a.step_prompts(step) == b.step_prompts(step)


def test_step_prompts_differ_per_epoch_and_seed():
    p = plan(train_rows=50, prompts_per_step=5, epochs=3)

    def epoch_order(pl: Plan, epoch: int) -> list[int]:
        spe = pl.steps_per_epoch
        return [i for s in range(epoch * spe, (epoch + 1) * spe) for i in pl.step_prompts(s)]

    orders = [epoch_order(p, e) for e in range(3)]
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert orders[0] != list(range(50))  # shuffled, not file order
    assert epoch_order(plan(50, 5, 3, seed=1), 0) != orders[0]


@pytest.mark.parametrize("train_rows, step", [(10, -1), (10, 4), (10, 100), (0, 0)])
def test_step_outside_the_plan_raises(train_rows, step):
    p = plan(train_rows=train_rows, prompts_per_step=4, epochs=2)  # total_steps: 4, or 0
    with pytest.raises(ValueError, match="outside the plan"):
        p.step_prompts(step)


@pytest.mark.parametrize(
    "staleness, step, expected",
    [
        (0, 0, 0),
        (0, 5, 5),
        (1, 0, 0),
        (1, 1, 0),
        (1, 5, 4),
        (2, 1, 0),
        (2, 2, 0),
        (2, 5, 3),
    ],
)
def test_min_policy_version(staleness, step, expected):
    assert plan(max_staleness=staleness).min_policy_version(step) == expected


def test_plan_round_trip(tmp_path):
    original = Plan("abc123", 37, "f" * 64, 8, 16, 3, 42, 1)
    path = tmp_path / "policies" / "plan.json"
    write_plan(path, original)
    assert read_plan(path) == original
    # total_steps is written for humans and other readers
    assert read_json(path)["total_steps"] == original.total_steps == 12


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "make, number, expected",
    [
        (step_name, 0, "step_000000"),
        (step_name, 12, "step_000012"),
        (step_name, 999_999, "step_999999"),
        (step_name, 1_234_567, "step_1234567"),  # wider than the padding: still a number
        (epoch_name, 1, "epoch_000001"),
        (epoch_name, 42, "epoch_000042"),
    ],
)
def test_names_are_zero_padded(make, number, expected):
    assert make(number) == expected


def test_numbered_children_sorts_by_number(tmp_path):
    for name in [
        "step_000010",
        "step_000009",
        "step_10000000",
        "step_2",
        "step_000000",
        "step_abc",
        "step_",
        "epoch_000001",
        "plan.json",
        ".step_000011.tmp-1-abcd",
        "xstep_1",
    ]:
        (tmp_path / name).mkdir()

    found = numbered_children(tmp_path)

    assert [n for n, _ in found] == [0, 2, 9, 10, 10_000_000]
    assert [p.name for _, p in found] == [
        "step_000000",
        "step_2",
        "step_000009",
        "step_000010",
        "step_10000000",
    ]
    assert numbered_children(tmp_path, EPOCH_RE) == [(1, tmp_path / "epoch_000001")]


def test_numbered_children_of_a_missing_folder_is_empty(tmp_path):
    assert numbered_children(tmp_path / "nope") == []


@pytest.mark.parametrize("step", [0, 7, 123456, 10**7])
def test_step_names_parse_back(step):
    # what step_name writes, the pattern numbered_children uses reads back as the same number
    assert int(STEP_RE.match(step_name(step)).group(1)) == step


R = Path("/ckpt/run1")
D = Path("/data")
LAYOUT = [
    # the locations documented at the top of shared/paths.py
    (RunPaths(R).config("sft"), R / "configs/sft.json"),
    (RunPaths(R).status("rollout"), R / "status/rollout.json"),
    (RunPaths(R).logs("grpo"), R / "logs/grpo"),
    (RunPaths(R).base_models, R / "base_models"),
    (RunPaths(R).sft_epoch(1), R / "sft/epoch_000001"),
    (RunPaths(R).plan, R / "policies/plan.json"),
    (RunPaths(R).policy(0), R / "policies/step_000000"),
    (RunPaths(R).policy(12), R / "policies/step_000012"),
    (RunPaths(R).rollout(3), R / "rollouts/step_000003"),
    (RunPaths(R).rollout_file(3), R / "rollouts/step_000003/rollouts.parquet"),
    (RunPaths(R).eval_report("base"), R / "eval/base/report.json"),
    (RunPaths(R).sft_trainer_state, R / "state/sft"),
    (RunPaths(R).grpo_state, R / "state/grpo"),
    (DataPaths(D).sample_sft, D / "sample/sft.jsonl"),
    (DataPaths(D).sample_rl, D / "sample/rl.jsonl"),
    (DataPaths(D).processed, D / "processed"),
    (DataPaths(D).sft_train, D / "processed/sft_train.jsonl"),
    (DataPaths(D).rl_train, D / "processed/rl_train.parquet"),
    (DataPaths(D).rl_test, D / "processed/rl_test.parquet"),
]


@pytest.mark.parametrize("actual, expected", LAYOUT, ids=lambda p: str(p))
def test_layout(actual, expected):
    assert actual == expected


def test_policies_and_rollouts_are_found_by_numbered_children(tmp_path):
    run = RunPaths(tmp_path)
    for version in (0, 1, 10):
        run.policy(version).mkdir(parents=True)
    run.plan.write_text("{}")  # lives beside the policies, is not one
    assert [n for n, _ in numbered_children(run.policies)] == [0, 1, 10]
    assert numbered_children(run.policies)[-1][1] == run.policy(10)


def test_max_steps_caps_the_plan():
    from proactive_rl.shared.schedule import Plan

    full = Plan("p", 40, "", 4, 2, 3, 0, 0)
    assert full.total_steps == 30
    assert Plan("p", 40, "", 4, 2, 3, 0, 0, max_steps=7).total_steps == 7
    assert Plan("p", 40, "", 4, 2, 3, 0, 0, max_steps=99).total_steps == 30


def test_max_prompts_cycles_a_small_pool_every_epoch():
    p = Plan("p", 100, "", 4, 2, 3, 0, 0, max_prompts=8)
    assert (p.pool, p.steps_per_epoch, p.total_steps) == (8, 2, 6)
    for epoch in range(3):
        used = p.step_prompts(2 * epoch) + p.step_prompts(2 * epoch + 1)
        assert sorted(used) == list(range(8))  # the same 8 rows, reshuffled, each epoch
    assert p.step_prompts(0) + p.step_prompts(1) != p.step_prompts(2) + p.step_prompts(3)
    # a pool larger than the split is the whole split
    assert Plan("p", 5, "", 4, 2, 1, 0, 0, max_prompts=50).pool == 5


def test_plan_without_max_prompts_reads_back(tmp_path):
    """plan.json written before max_prompts existed still reads (as the whole split)."""
    path = tmp_path / "plan.json"
    write_plan(path, Plan("old", 12, "", 4, 2, 1, 0, 0))
    data = read_json(path)
    del data["max_prompts"]
    path.write_text(__import__("json").dumps(data))
    assert read_plan(path).pool == 12


# --- paths recorded in markers and configs ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "recorded"),
    [
        ("/ckpt/run/sft/epoch_000003", "sft/epoch_000003"),
        ("/ckpt/run/base_models/tiny", "base_models/tiny"),
        ("/models/qwen", "/models/qwen"),  # outside the run: absolute
        ("/ckpt/run2/sft", "/ckpt/run2/sft"),  # a sibling whose name starts alike is outside
    ],
)
def test_recorded_paths_are_relative_to_the_run(path, recorded):
    assert record_path(Path(path), Path("/ckpt/run")) == recorded


def test_a_relative_path_is_recorded_relative_to_the_run_not_the_working_folder(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert record_path(Path("checkpoints/run/sft/epoch_000001"), Path("checkpoints/run")) == (
        "sft/epoch_000001"
    )


def test_recorded_paths_resolve_against_the_run_from_any_folder(tmp_path, monkeypatch):
    run = tmp_path / "mnt" / "run"
    (run / "sft" / "epoch_000003").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "mnt")  # anywhere but where the run was written
    assert resolve_recorded("sft/epoch_000003", run) == run / "sft" / "epoch_000003"
    assert resolve_recorded("/models/qwen", run) == Path("/models/qwen")
    # an older marker: the writer's working-folder path (checkpoints/<run>/...) of a run
    # since moved to mnt/run
    old = "checkpoints/run/sft/epoch_000003"
    assert resolve_recorded(old, run) == run / "sft" / "epoch_000003"
    # an older marker naming a folder outside the run: relative to the working folder
    (tmp_path / "mnt" / "models" / "base").mkdir(parents=True)
    assert resolve_recorded("models/base", run) == Path("models/base")


def test_configs_record_model_folders_absolute(tmp_path, monkeypatch):
    (tmp_path / "models" / "base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert absolute_spec("models/base") == str(tmp_path / "models" / "base")
    assert absolute_spec("builtin:tiny") == "builtin:tiny"
    assert absolute_spec("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"  # nothing there: as given

"""Several rollout workers splitting a step: the split rule, where the parts live, the
trainer's merge checks, and the wait that names the worker whose part is missing."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from proactive_rl.shared.config import load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.peers import PeerFailed, PeerWatch, write_status
from proactive_rl.shared.publish import publish_dir, staging_dir
from proactive_rl.shared.schedule import Plan, read_plan, write_plan
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.rollouts import merge_parts, merged_marker, wait_parts
from proactive_rl.stages.rollout.config import RolloutConfig

N = 2


def plan(workers: int, prompts: int = 5, rows: int = 23) -> Plan:
    return Plan("p1", rows, "", prompts, N, 2, 7, 0, rollout_workers=workers)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_shares_are_disjoint_whole_and_cover_the_step(workers):
    p = plan(workers)
    for step in range(p.total_steps):
        shares = [p.worker_prompts(step, w) for w in range(workers)]
        flat = [g for share in shares for g in share]
        assert sorted(flat) == sorted(p.step_prompts(step))  # union, each once
        assert len(flat) == len(set(flat))
        # position p of the step goes to worker p % N, in step order
        for pos, prompt in enumerate(p.step_prompts(step)):
            assert shares[pos % workers][pos // workers] == prompt
    assert plan(1).worker_prompts(0, 0) == plan(1).step_prompts(0)
    with pytest.raises(ValueError, match="worker 2 is outside 0..1"):
        plan(2).worker_prompts(0, 2)


def test_a_plan_written_before_rollout_workers_means_one(tmp_path):
    path = tmp_path / "plan.json"
    write_plan(path, plan(3))
    assert read_plan(path).rollout_workers == 3
    old = path.read_text().replace('"rollout_workers": 3,', "")
    assert "rollout_workers" not in old
    path.write_text(old)
    assert read_plan(path).rollout_workers == 1


def test_config_fields_are_bounded():
    assert GrpoConfig().rollout_workers == 1 and RolloutConfig().worker == 0
    with pytest.raises(UserError, match="rollout_workers"):
        load_config(GrpoConfig, None, ["rollout_workers=0"])
    with pytest.raises(UserError, match="worker"):
        load_config(RolloutConfig, None, ["worker=-1"])


R = Path("/ckpt/run")


def test_layout_one_worker_unchanged_parts_in_their_folders():
    paths = RunPaths(R)
    assert paths.rollout_home(0, 1) == R / "rollouts"
    assert paths.rollout_part(3, 0, 1) == paths.rollout(3) == R / "rollouts/step_000003"
    assert paths.rollout_parts(3, 2) == [
        R / "rollouts/part-0-of-2/step_000003",
        R / "rollouts/part-1-of-2/step_000003",
    ]
    assert paths.status("rollout-1") == R / "status/rollout-1.json"


def test_each_worker_owns_only_its_folders(tmp_path):
    paths = RunPaths(tmp_path)
    assert paths.rollout_outputs(0) == [paths.rollouts]  # nothing there yet
    for folder in ["step_000000", "part-0-of-2", "part-1-of-2", "part-1-of-3"]:
        (paths.rollouts / folder).mkdir(parents=True)
    assert paths.rollout_outputs(1) == [
        paths.rollouts / "part-1-of-2",
        paths.rollouts / "part-1-of-3",
    ]
    assert paths.rollout_outputs(2) == []
    assert paths.rollout_outputs(0) == [
        paths.rollouts / "part-0-of-2",
        paths.rollouts / "step_000000",
    ]


def rows_of(groups: list[int], step: int = 0, n: int = N) -> list[dict]:
    return [
        {"step": step, "policy_version": step, "group_id": g, "sample_index": k}
        for g in groups
        for k in range(n)
    ]


def parts_of(p: Plan, step: int, shares: list[list[int]], dropped=None) -> list:
    return [
        (Path(f"part-{w}"), {"dropped": (dropped or {}).get(w, [])}, rows_of(share, step))
        for w, share in enumerate(shares)
    ]


def test_merge_concatenates_the_parts_in_worker_order():
    p = plan(2)
    shares = [p.worker_prompts(1, w) for w in range(2)]
    rows = merge_parts(p, 1, parts_of(p, 1, shares))
    assert [r["group_id"] for r in rows[::N]] == shares[0] + shares[1]


def test_merge_names_the_step_and_worker_of_a_missing_group():
    p = plan(2)
    shares = [p.worker_prompts(0, w) for w in range(2)]
    gone = shares[1][0]
    with pytest.raises(
        UserError, match=rf"step 0: the part of rollout worker 1 .* lacks prompt\(s\) \[{gone}\]"
    ):
        merge_parts(p, 0, parts_of(p, 0, [shares[0], shares[1][1:]]))
    # a prompt the worker left out as too long (listed in its marker) is not missing
    merge_parts(p, 0, parts_of(p, 0, [shares[0], shares[1][1:]], dropped={1: [gone]}))


def test_merge_refuses_a_duplicated_group():
    p = plan(2)
    shares = [p.worker_prompts(0, w) for w in range(2)]
    twice = [shares[0], shares[1] + shares[1][:1]]
    with pytest.raises(UserError, match="step 0: the part of rollout worker 1 .*duplicated group"):
        merge_parts(p, 0, parts_of(p, 0, twice))
    # both workers sampled everything (two processes with worker=0, say): not its share
    with pytest.raises(UserError, match=r"worker 0 .*duplicated .* share of worker\(s\) \[1\]"):
        merge_parts(p, 0, parts_of(p, 0, [p.step_prompts(0), p.step_prompts(0)]))


def test_merge_refuses_a_missing_part():
    p = plan(2)
    with pytest.raises(
        UserError, match="step 0: 1 rollout parts where the plan has rollout_workers=2"
    ):
        merge_parts(p, 0, parts_of(p, 0, [p.worker_prompts(0, 0)]))


def test_merged_marker_takes_the_oldest_policy_and_refuses_other_sampling():
    a = {"policy_version": 3, "temperature": 1.0, "max_new_tokens": 8, "seconds": {"generate": 2.0}}
    b = {**a, "policy_version": 2, "seconds": {"generate": 5.0, "load": 1.0}}
    merged = merged_marker(3, [a, b])
    assert merged["policy_version"] == 2 and merged["seconds"]["generate"] == 5.0
    assert merged_marker(3, [a]) is a
    with pytest.raises(UserError, match="different temperature"):
        merged_marker(3, [a, {**b, "temperature": 0.7}])


def test_the_wait_names_the_worker_whose_part_is_missing(tmp_path):
    paths = RunPaths(tmp_path)
    p = plan(2)
    staging = staging_dir(paths.rollout_part(0, 0, 2))
    (staging / "rollouts.parquet").write_bytes(b"x")
    publish_dir(staging, paths.rollout_part(0, 0, 2), {"plan_id": p.plan_id, "step": 0})
    started = PeerWatch(paths.status("grpo").parent)
    write_status(paths.status("rollout-1"), "failed", error="UserError: boom")
    config = GrpoConfig(wait_timeout=5)
    with pytest.raises(
        PeerFailed, match=r"rollout-1 worker failed .*part 1 of 2: rollout worker=1"
    ):
        wait_parts(config, paths, p, 0, started)
    # a killed one (no new heartbeat for peer_quiet_timeout on our clock) is named too
    ticks = itertools.count(step=1.0)
    watch = PeerWatch(paths.status("grpo").parent, clock=lambda: next(ticks))
    write_status(paths.status("rollout-1"), "running")
    config = GrpoConfig(wait_timeout=500, peer_quiet_timeout=10.5)
    with pytest.raises(PeerFailed, match="rollout-1 worker went quiet"):
        wait_parts(config, paths, p, 0, watch)

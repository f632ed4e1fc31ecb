"""The trainer refuses rollouts that are too stale, of another step, or with broken groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.schedule import Plan
from proactive_rl.stages.grpo.rollouts import check_rollouts


def rows(step: int, version: int, groups: dict[int, int]) -> list[dict]:
    return [
        {"step": step, "policy_version": version, "group_id": g}
        for g, count in groups.items()
        for _ in range(count)
    ]


def plan(max_staleness: int) -> Plan:
    return Plan("p", 40, "", 2, 3, 1, 0, max_staleness)


@pytest.mark.parametrize(
    "staleness, step, version, ok",
    [
        (0, 5, 5, True),
        (0, 5, 4, False),  # on-policy run: one version behind is refused
        (1, 5, 4, True),
        (1, 5, 3, False),
        (2, 5, 3, True),
        (0, 0, 0, True),
    ],
)
def test_staleness(staleness, step, version, ok):
    batch = rows(step, version, {1: 3, 7: 3})
    if ok:
        check_rollouts(batch, plan(staleness), step, Path("r"))
    else:
        with pytest.raises(UserError, match=f"max_staleness={staleness} allows"):
            check_rollouts(batch, plan(staleness), step, Path("r"))


def test_broken_groups_and_wrong_step_are_refused():
    with pytest.raises(UserError, match="exactly n=3"):
        check_rollouts(rows(2, 2, {1: 3, 7: 2}), plan(0), 2, Path("r"))
    with pytest.raises(UserError, match="other steps"):
        check_rollouts(rows(3, 3, {1: 3}), plan(0), 2, Path("r"))

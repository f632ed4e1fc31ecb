"""One RL step's rollouts as the trainer reads them: wait for every rollout worker's part,
verify each against its marker, merge them in worker order, and check that together they hold
every prompt of the step exactly once, each with n responses (docs/contract.md, "Several
rollout workers"). With one worker the one part is rollouts/step_N, as it always was."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import ROLLOUTS_FILE, RunPaths, rollout_worker_name
from proactive_rl.shared.peers import PeerWatch, wait_for
from proactive_rl.shared.publish import VERIFIED, is_stable, read_marker, verify
from proactive_rl.shared.schedule import Plan
from proactive_rl.stages.grpo.config import GrpoConfig

if TYPE_CHECKING:
    from proactive_rl.shared.schemas import RolloutRow

ROLLOUTS_DAMAGED = "Check the volume for errors, then start both workers over with --clean"
# enough prompt ids to find the problem, not a screenful
SHOWN = 10


class Part(NamedTuple):
    """One rollout worker's part of a step: its folder, its marker and its rows."""

    folder: Path
    marker: dict[str, Any]
    rows: list[RolloutRow]


def wait_parts(
    config: GrpoConfig,
    paths: RunPaths,
    plan: Plan,
    step: int,
    started: PeerWatch,
    own_check: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """The markers of the step's parts in worker order, once every part is published for this
    plan. One part after the other, each wait watching the worker that writes that part, so a
    failed, killed or missing worker is named (all parts are needed: the order costs nothing).
    `started`: the peers' status files as at grpo's start (one watch for the whole run);
    `own_check`, called at every poll, raises when this worker's own background work failed."""
    markers = []
    workers = plan.rollout_workers
    for worker, folder in enumerate(paths.rollout_parts(step, workers)):
        what = f"rollouts {folder}/STABLE.json"
        if workers > 1:
            what += f" (part {worker} of {workers}: rollout worker={worker})"
        peer = rollout_worker_name(worker)

        def published(folder: Path = folder) -> dict[str, Any] | None:
            own_check()
            if is_stable(folder) and (m := read_marker(folder)).get("plan_id") == plan.plan_id:
                return m
            return None

        marker = wait_for(
            published,
            what,
            timeout=config.wait_timeout,
            peer=peer,
            peer_status=paths.status(peer),
            watch=started,
            quiet_after=config.peer_quiet_timeout,
            start_after=config.peer_start_timeout,
        )
        markers.append(marker)
    return markers


def read_parts(
    paths: RunPaths, plan: Plan, step: int, markers: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[RolloutRow]]:
    """The step's marker (the parts' markers merged) and rows (the parts in worker order),
    each part verified and checked before a row is trained on."""
    from proactive_rl.shared.schemas import ROLLOUTS, read_table

    parts = []
    for folder, marker in zip(
        paths.rollout_parts(step, plan.rollout_workers), markers, strict=True
    ):
        verify(folder, ROLLOUTS_DAMAGED, cache=VERIFIED)
        parts.append(Part(folder, marker, read_table(folder / ROLLOUTS_FILE, ROLLOUTS).to_pylist()))
    rows = merge_parts(plan, step, parts)  # first: a duplicated group is named as one
    for folder, _, part in parts:
        check_rollouts(part, plan, step, folder)
    return merged_marker(step, markers), rows


def merge_parts(plan: Plan, step: int, parts: list[Part]) -> list[RolloutRow]:
    """The rows of the parts (folder, marker, rows), given in worker order, concatenated. Each
    part must hold its worker's share of the step (`Plan.worker_prompts`) and nothing else,
    every prompt of it once with n responses, except the prompts its marker lists as dropped
    (longer than max_prompt_tokens); a part whose marker has no `dropped` (written before
    workers split steps) is not checked for missing prompts."""
    if len(parts) != plan.rollout_workers:
        raise UserError(
            f"step {step}: {len(parts)} rollout parts where the plan has "
            f"rollout_workers={plan.rollout_workers}"
        )
    position = {g: pos for pos, g in enumerate(plan.step_prompts(step))}
    merged: list[RolloutRow] = []
    for worker, (folder, marker, rows) in enumerate(parts):
        where = f"step {step}: the part of rollout worker {worker} ({folder})"
        share = plan.worker_prompts(step, worker)
        counts = Counter(row["group_id"] for row in rows)
        # the shares are disjoint: a group in two parts is outside the share of one of them
        refuse_foreign(plan, worker, where, sorted(set(counts) - set(share)), position)
        refuse_doubled(plan, where, counts)
        if "dropped" in marker:
            refuse_missing(where, share, counts, marker["dropped"])
        merged.extend(rows)
    return merged


def refuse_foreign(
    plan: Plan, worker: int, where: str, foreign: list[int], position: dict[int, int]
) -> None:
    """Refuse a part holding groups outside its worker's share: another worker's (duplicated)
    or none of this step's (foreign). `position`: each prompt's place in the step."""
    if not foreign:
        return
    owners = sorted({position[g] % plan.rollout_workers for g in foreign if g in position})
    whose = f"the share of worker(s) {owners}" if owners else "not of this step"
    kind = "duplicated" if owners else "foreign"
    raise UserError(
        f"{where}: {kind} group(s): it holds prompt(s) {foreign[:SHOWN]}, which are "
        f"{whose}, not its own (positions p % {plan.rollout_workers} == {worker} of "
        "the step). Was it started with another worker index (two processes with one "
        "index?) or another plan? Give each rollout process its own worker and start "
        "them over with --clean"
    )


def refuse_doubled(plan: Plan, where: str, counts: Counter[int]) -> None:
    """Refuse a part with more than n responses to a prompt."""
    doubled = sorted(g for g, c in counts.items() if c > plan.n)
    if doubled:
        raise UserError(
            f"{where}: duplicated group(s): prompt(s) {doubled[:SHOWN]} have more than "
            f"n={plan.n} responses. Start the workers over with --clean"
        )


def refuse_missing(where: str, share: list[int], counts: Counter[int], dropped: list[int]) -> None:
    """Refuse a part that lacks prompts of its share its marker does not list as dropped."""
    missing = [g for g in share if g not in counts and g not in set(dropped)]
    if missing:
        raise UserError(
            f"{where} lacks prompt(s) {missing[:SHOWN]} of its share "
            f"({len(missing)} of {len(share)}), and its marker does not list them as "
            "dropped: start the workers over with --clean"
        )


def merged_marker(step: int, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """What the trainer reads from the step's marker, for all parts: the sampling settings
    (which must agree), the oldest policy version among them, and the slowest part's times
    (the workers run side by side). With one part, its marker as it is."""
    if len(markers) == 1:
        return markers[0]
    refuse_other_sampling(step, markers)
    seconds = [m.get("seconds", {}) for m in markers]
    return {
        **markers[0],
        "policy_version": min(m["policy_version"] for m in markers),
        "seconds": {
            key: max(s.get(key, 0.0) for s in seconds) for key in ("wait", "load", "generate")
        },
        "rows": sum(m.get("rows", 0) for m in markers),
        "groups": sum(m.get("groups", 0) for m in markers),
    }


def refuse_other_sampling(step: int, markers: list[dict[str, Any]]) -> None:
    """Refuse parts sampled with different settings: the trainer scores every part with one."""
    for key in ("temperature", "max_new_tokens"):
        values = [m.get(key) for m in markers]
        if len(set(values)) > 1:
            raise UserError(
                f"step {step}: the rollout workers sampled with different {key} ({values}, "
                "in worker order); the trainer scores every part with one: start them with "
                "the same sampling settings"
            )


def check_rollouts(rows: list[RolloutRow], plan: Plan, step: int, folder: Path) -> None:
    """Refuse rollouts that are too stale, of another step, or with broken groups."""
    oldest = plan.min_policy_version(step)
    versions = {row["policy_version"] for row in rows}
    if min(versions, default=oldest) < oldest:
        raise UserError(
            f"{folder}: rollouts of step {step} come from policy {min(versions)}, older than "
            f"max_staleness={plan.max_staleness} allows (>= {oldest})"
        )
    if {row["step"] for row in rows} != {step}:
        raise UserError(f"{folder}: rows of other steps than {step}")
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["group_id"]] = counts.get(row["group_id"], 0) + 1
    broken = {g: c for g, c in counts.items() if c != plan.n}
    if broken:
        raise UserError(f"{folder}: groups without exactly n={plan.n} responses: {broken}")

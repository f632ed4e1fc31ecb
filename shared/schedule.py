"""The RL schedule: which prompts each step uses. Written once by the GRPO worker as
`policies/plan.json`; the rollout worker and evaluation read it, so both sides agree by
construction instead of by matching config values.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proactive_rl.shared.publish import read_json, write_json_atomic


@dataclass(frozen=True)
class Plan:
    plan_id: str  # fresh per training run: markers from an earlier run never match it
    train_rows: int
    train_sha256: str
    prompts_per_step: int
    n: int  # responses per prompt (the group size)
    epochs: int
    seed: int
    max_staleness: int  # rollout step k may use policy version >= k - max_staleness
    max_steps: int | None = None  # stop early (quick runs, benchmarks); None = every epoch
    # Train on the first N rows only (a small pool seen over several epochs: benchmarks that
    # compare the same prompts early and late); None = the whole split.
    max_prompts: int | None = None
    # Rollout processes that split each step's prompts (`rollout_workers` of grpo). A plan.json
    # written before the key existed means one.
    rollout_workers: int = 1

    @property
    def pool(self) -> int:
        return (
            self.train_rows if self.max_prompts is None else min(self.max_prompts, self.train_rows)
        )

    @property
    def batch(self) -> int:
        return min(self.prompts_per_step, self.pool)

    @property
    def steps_per_epoch(self) -> int:
        # drop_last: every step has a full batch, as in veRL's dataloader. An empty split has no
        # steps (not a ZeroDivisionError), so grpo can report it as a UserError.
        return self.pool // self.batch if self.batch else 0

    @property
    def total_steps(self) -> int:
        full = self.steps_per_epoch * self.epochs
        return full if self.max_steps is None else min(full, self.max_steps)

    def min_policy_version(self, step: int) -> int:
        return max(0, step - self.max_staleness)

    def step_prompts(self, step: int) -> list[int]:
        """Row indices of rl_train.parquet used at `step`: a seeded shuffle per epoch.

        >>> p = Plan("x", 10, "", 4, 2, 2, 0, 0)
        >>> a, b = p.step_prompts(0), p.step_prompts(1)
        >>> p.total_steps, len(a), len(set(a) | set(b))  # no prompt twice within an epoch
        (4, 4, 8)
        """
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} is outside the plan (0..{self.total_steps - 1})")
        epoch, within = divmod(step, self.steps_per_epoch)
        order = list(range(self.pool))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order[within * self.batch : (within + 1) * self.batch]

    def worker_prompts(self, step: int, worker: int) -> list[int]:
        """The share of rollout worker `worker` of the step's prompts: the prompts at positions
        p of `step_prompts(step)` with p % rollout_workers == worker, in step order. Whole
        prompts (a worker samples all n responses of each), disjoint, together the whole step.

        >>> p = Plan("x", 10, "", 5, 2, 1, 0, 0, rollout_workers=2)
        >>> p.step_prompts(0), p.worker_prompts(0, 0), p.worker_prompts(0, 1)
        ([5, 0, 3, 2, 7], [5, 3, 7], [0, 2])
        """
        if not 0 <= worker < self.rollout_workers:
            raise ValueError(f"worker {worker} is outside 0..{self.rollout_workers - 1}")
        return self.step_prompts(step)[worker :: self.rollout_workers]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total_steps": self.total_steps}


def write_plan(path: Path, plan: Plan) -> None:
    write_json_atomic(path, plan.to_json())


def read_plan(path: Path) -> Plan:
    data = read_json(path)
    data.pop("total_steps", None)
    return Plan(**data)

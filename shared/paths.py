"""Every path on the mounted volumes, in one place. Stages never join volume paths by hand.

Layout (docs/contract.md has the full contract):

    data/                          DataPaths
      sample/sft.jsonl, rl.jsonl   bundled sample inputs (users' formats)
      processed/                   prep output (an artifact folder with STABLE.json)
    checkpoints/<run>/             RunPaths
      configs/<stage>.json         resolved config of each stage's last start
      status/<stage>.json          worker state (running / done / failed) + heartbeat
      launches/<stage>.json        the launch (PROACTIVE_LAUNCH_ID) that claimed a stage's outputs
      base_models/                 materialised builtin models
      sft/epoch_000001/            HF model folder per epoch
      policies/plan.json           the RL schedule (written by grpo)
      policies/step_000000/        policy version N (HF folder, or a LoRA adapter folder whose
                                   adapter_config.json names its base); version 0 = starting model
      rollouts/step_000000/        rollouts.parquet for RL step N (one rollout worker)
      rollouts/part-1-of-2/step_000000/  worker 1's share of step N (rollout_workers=2)
      eval/<name>/                 report.json, report.md, samples.jsonl, *.png
      logs/<stage>/                metrics.jsonl + tensorboard events
      trackers/                    W&B offline runs (wandb/), MLflow's store (mlflow.db, artifacts/)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

STEP_RE = re.compile(r"^step_(\d+)$")
EPOCH_RE = re.compile(r"^epoch_(\d+)$")
PART_RE = re.compile(r"^part-(\d+)-of-(\d+)$")
ROLLOUTS_FILE = "rollouts.parquet"


def step_name(step: int) -> str:
    """Zero-padded so listings sort; always parsed back as a number.

    >>> step_name(12)
    'step_000012'
    """
    return f"step_{step:06d}"


def epoch_name(epoch: int) -> str:
    return f"epoch_{epoch:06d}"


def part_name(worker: int, workers: int) -> str:
    """The folder of rollout worker `worker`'s share when `workers` split each step. The count
    is in the name, so parts of a plan with another count are never mistaken for these.

    >>> part_name(1, 2)
    'part-1-of-2'
    """
    return f"part-{worker}-of-{workers}"


def rollout_worker_name(worker: int) -> str:
    """The stage name of rollout worker `worker` for its status, config and logs. Worker 0 is
    `rollout`, the name of a one-worker run (eval reads configs/rollout.json for the reward).

    >>> rollout_worker_name(0), rollout_worker_name(1)
    ('rollout', 'rollout-1')
    """
    return "rollout" if worker == 0 else f"rollout-{worker}"


ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(folder: Path) -> Path | None:
    """The base model of a LoRA adapter folder (None: `folder` is a whole model). The adapter
    names it relative to itself, so a run directory can be moved or mounted elsewhere."""
    config = Path(folder) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = Path(json.loads(config.read_text())["base_model_name_or_path"])
    return base if base.is_absolute() else (Path(folder) / base).resolve()


def relative_base(base: Path, adapter: Path) -> str:
    """How an adapter published at `adapter` names `base`: relative to the adapter (e.g.
    ../../sft/epoch_000002), so the two can move together."""
    return os.path.relpath(Path(base).resolve(), Path(adapter).resolve())


# Where a recorded path of an older run may point into the run directory: policy 0's marker
# used to hold the writer's cwd-relative path, e.g. checkpoints/<run>/sft/epoch_000003.
_RUN_FOLDERS = ("sft", "policies", "base_models")


def record_path(path: Path, root: Path) -> str:
    """How a marker or config names `path`: relative to `root` (the run or data directory) when
    it lies inside it, else absolute, so the directory can be moved, mounted elsewhere, or read
    from any working folder.

    >>> record_path(Path("/ckpt/run/sft/epoch_000003"), Path("/ckpt/run"))
    'sft/epoch_000003'
    >>> record_path(Path("/models/qwen"), Path("/ckpt/run"))
    '/models/qwen'
    """
    absolute = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root))
    return str(absolute.relative_to(root)) if absolute.is_relative_to(root) else str(absolute)


def absolute_spec(spec: str) -> str:
    """A model setting as configs record it: an existing folder as an absolute path (the stage
    reads it relative to where it started; a reader of configs/<stage>.json may be elsewhere);
    `builtin:…`, keywords such as grpo's 'sft', and names of nothing on disk as given."""
    path = Path(spec.strip()).expanduser()
    if spec.startswith("builtin:") or not path.exists():
        return spec
    return os.path.abspath(path)


def resolve_recorded(recorded: str, root: Path) -> Path:
    """The folder a recorded path names: relative ones are relative to `root`.

    Markers of older runs hold paths relative to the writer's working folder: one whose tail
    is a run folder (.../sft/epoch_000003) is found under `root`; anything else is read as
    relative to the current folder, as it was written.
    """
    path = Path(recorded).expanduser()
    if path.is_absolute():
        return path
    if (Path(root) / path).exists():
        return Path(root) / path
    parts = path.parts
    tails = [i for i, part in enumerate(parts[:-1]) if part in _RUN_FOLDERS]
    if tails and (Path(root).joinpath(*parts[tails[-1] :])).exists():
        return Path(root).joinpath(*parts[tails[-1] :])
    return path if path.exists() else Path(root) / path


def numbered_children(parent: Path, pattern: re.Pattern[str] = STEP_RE) -> list[tuple[int, Path]]:
    """(number, path) of the children matching `pattern`, sorted by number (not by name)."""
    if not parent.is_dir():
        return []
    found = []
    for child in parent.iterdir():
        match = pattern.match(child.name)
        if match:
            found.append((int(match.group(1)), child))
    return sorted(found)


@dataclass(frozen=True)
class DataPaths:
    root: Path

    @property
    def sample_sft(self) -> Path:
        return self.root / "sample" / "sft.jsonl"

    @property
    def sample_rl(self) -> Path:
        return self.root / "sample" / "rl.jsonl"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def sft_train(self) -> Path:
        return self.processed / "sft_train.jsonl"

    @property
    def rl_train(self) -> Path:
        return self.processed / "rl_train.parquet"

    @property
    def rl_test(self) -> Path:
        return self.processed / "rl_test.parquet"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def config(self, stage: str) -> Path:
        return self.root / "configs" / f"{stage}.json"

    def status(self, stage: str) -> Path:
        return self.root / "status" / f"{stage}.json"

    def logs(self, stage: str) -> Path:
        return self.root / "logs" / stage

    @property
    def trackers(self) -> Path:
        """The experiment trackers' local stores (trainer.logger wandb / mlflow, offline)."""
        return self.root / "trackers"

    def launch(self, stage: str) -> Path:
        """Which launch (PROACTIVE_LAUNCH_ID) claimed `stage`'s outputs: a restart of that
        launch continues them (shared/claims.py)."""
        return self.root / "launches" / f"{stage}.json"

    @property
    def base_models(self) -> Path:
        return self.root / "base_models"

    @property
    def sft(self) -> Path:
        return self.root / "sft"

    def sft_epoch(self, epoch: int) -> Path:
        return self.sft / epoch_name(epoch)

    @property
    def sft_trainer_state(self) -> Path:
        """HF Trainer checkpoints (optimizer, RNG) kept for `--resume`."""
        return self.root / "state" / "sft"

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    @property
    def plan(self) -> Path:
        return self.policies / "plan.json"

    def policy(self, version: int) -> Path:
        return self.policies / step_name(version)

    @property
    def grpo_state(self) -> Path:
        """Optimizer state and RNG of the GRPO worker, for `--resume`."""
        return self.root / "state" / "grpo"

    def grpo_optimizer_state(self, version: int) -> Path:
        """The optimizer, schedule and RNG state that goes with policy `version`. Named by the
        version, so the state of the newest published policy is still there when a crash
        falls between saving the next one and publishing its policy."""
        return self.grpo_state / f"optimizer_{step_name(version)}.pt"

    @property
    def rollouts(self) -> Path:
        return self.root / "rollouts"

    def rollout(self, step: int) -> Path:
        return self.rollouts / step_name(step)

    def rollout_file(self, step: int) -> Path:
        return self.rollout(step) / ROLLOUTS_FILE

    def rollout_home(self, worker: int, workers: int) -> Path:
        """Where rollout worker `worker` publishes its step folders: rollouts/ itself when one
        worker samples whole steps (the layout of every run before workers split steps), else
        its own part folder, so each worker's claim, staging and --resume stay inside it."""
        return self.rollouts if workers == 1 else self.rollouts / part_name(worker, workers)

    def rollout_part(self, step: int, worker: int, workers: int) -> Path:
        return self.rollout_home(worker, workers) / step_name(step)

    def rollout_parts(self, step: int, workers: int) -> list[Path]:
        """The folders that together hold step `step`'s rollouts, in worker order."""
        return [self.rollout_part(step, w, workers) for w in range(workers)]

    def rollout_outputs(self, worker: int) -> list[Path]:
        """What rollout worker `worker` may have written under rollouts/, whatever the number
        of workers of the plan it has not read yet (for --resume and --clean at start-up):
        worker 0 the folder itself (one-worker steps sit in it), less other workers' parts;
        worker i its part-i-of-* folders."""
        children = sorted(self.rollouts.iterdir()) if self.rollouts.is_dir() else []
        parts = {p: int(m.group(1)) for p in children if (m := PART_RE.match(p.name))}
        if worker > 0:
            return [p for p, owner in parts.items() if owner == worker]
        others = [p for p, owner in parts.items() if owner != worker]
        return [p for p in children if p not in others] if others else [self.rollouts]

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def eval_dir(self, name: str) -> Path:
        """One evaluation report folder: report.json, report.md, samples.jsonl, PNG plots."""
        return self.eval / name

    def eval_report(self, name: str) -> Path:
        return self.eval_dir(name) / "report.json"

"""Which folder of a run an export names: a checkpoint spec -> one published model folder.

Specs are eval's (final, policy:N, sft, sft:N) plus the folder names a listing shows
(step_000003, policies/step_000003, epoch_000001, sft/epoch_000001) and `latest`. Only
published folders (with STABLE.json) count; anything else is a UserError that lists what the
run has. (Eval resolves its specs in stages/eval/checkpoints.py; a stage does not import
another, so the few rules needed here are repeated; the names come from stages/reports.py.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import EPOCH_RE, STEP_RE, RunPaths
from proactive_rl.shared.publish import published
from proactive_rl.stages.reports import policy_label, sft_label

VALID = (
    "final, latest, policy:N, sft, sft:N, or a folder name: step_000003, policies/step_000003, "
    "epoch_000001, sft/epoch_000001"
)
_POLICY = re.compile(r"^(?:policy:(\d+)|(?:policies/)?step_(\d+))$")
_EPOCH = re.compile(r"^(?:sft:(\d+)|(?:sft/)?epoch_(\d+))$")


@dataclass(frozen=True)
class Chosen:
    """The checkpoint an export names."""

    spec: str  # as the user gave it
    kind: str  # policy | sft
    number: int  # policy version or SFT epoch
    path: Path

    @property
    def label(self) -> str:
        """The name eval's report gives the same checkpoint (policy_3, sft_epoch_1)."""
        return policy_label(self.number) if self.kind == "policy" else sft_label(self.number)


def check_run_dir(run_dir: Path) -> None:
    """A run directory that is not there: say which runs its parent holds."""
    if run_dir.is_dir():
        return
    parent = run_dir.absolute().parent
    runs = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    where = f"runs in {parent}: {', '.join(runs)}" if runs else f"{parent} holds no run"
    raise UserError(f"run directory {run_dir} does not exist ({where}); pass --run-dir")


def resolve_checkpoint(spec: str, paths: RunPaths) -> Chosen:
    """The published folder `spec` names in the run."""
    spec = spec.strip().rstrip("/")
    policies = published(paths.policies, STEP_RE)
    epochs = published(paths.sft, EPOCH_RE)
    if spec in ("final", "latest"):
        if policies:
            return Chosen(spec, "policy", *policies[-1])
        if spec == "latest" and epochs:
            return Chosen(spec, "sft", *epochs[-1])
        raise _missing(spec, paths, "the run has no published policy")
    if spec == "sft":
        if epochs:
            return Chosen(spec, "sft", *epochs[-1])
        raise _missing(spec, paths, "the run has no published SFT epoch")
    for pattern, kind, found in ((_POLICY, "policy", policies), (_EPOCH, "sft", epochs)):
        match = pattern.match(spec)
        if match:
            number = int(next(g for g in match.groups() if g is not None))
            folder = dict(found).get(number)
            if folder is None:
                what = "policy version" if kind == "policy" else "SFT epoch"
                raise _missing(spec, paths, f"{what} {number} is not published")
            return Chosen(spec, kind, number, folder)
    raise UserError(
        f"unknown checkpoint {spec!r}: give one of {VALID}. Published in {paths.root}: "
        f"{available(paths)}"
    )


def _missing(spec: str, paths: RunPaths, why: str) -> UserError:
    return UserError(
        f"checkpoint {spec!r}: {why} in {paths.root}. Published there: {available(paths)}"
    )


def available(paths: RunPaths) -> str:
    """What the run has published, as the specs that name it: `policy:0..3 (final), sft:1..2`."""
    parts = []
    policies = [n for n, _ in published(paths.policies, STEP_RE)]
    epochs = [n for n, _ in published(paths.sft, EPOCH_RE)]
    if policies:
        parts.append(f"policies {_numbers('policy:', policies)} (final = policy:{policies[-1]})")
    if epochs:
        parts.append(f"SFT epochs {_numbers('sft:', epochs)} (sft = sft:{epochs[-1]})")
    return "; ".join(parts) if parts else "nothing (no policies/step_* or sft/epoch_* published)"


def _numbers(prefix: str, numbers: list[int]) -> str:
    """`policy:0, policy:1` for a few; `policy:0, policy:1, ..., policy:40` for many.

    >>> _numbers("sft:", [1, 2]), _numbers("policy:", list(range(10)))
    ('sft:1, sft:2', 'policy:0, policy:1, ..., policy:8, policy:9')
    """
    names = [f"{prefix}{n}" for n in numbers]
    return ", ".join(names if len(names) <= 5 else [*names[:2], "...", *names[-2:]])

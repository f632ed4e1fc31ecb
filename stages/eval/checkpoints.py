"""Which model folders an evaluation compares: checkpoint specs -> labelled folders.

Specs (EvalConfig.checkpoints): base, sft, sft:N, sft:all, final, policy:N, policies:all,
rl:epochs, builtin:tiny, or a local Hugging Face folder. Only published folders (with
STABLE.json) count. With no specs given, the default list (base, sft, final) skips what the run
does not have; a spec the user named that finds nothing is a UserError.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proactive_rl.engine.model_checks import check_model_folder
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import EPOCH_RE, RunPaths, record_path, resolve_recorded
from proactive_rl.shared.publish import is_stable, published, read_marker
from proactive_rl.stages.reports import policy_label, sft_label

logger = logging.getLogger(__name__)

DEFAULT_SPECS = ("base", "sft", "final")
VALID = (
    "base, sft, sft:N, sft:all, final, policy:N, policies:all, rl:epochs, builtin:tiny, "
    "or a model folder"
)


# What to do about a run's own checkpoint that is damaged (folders the user named, and the base
# model, are checked where they are resolved).
DAMAGED = {
    "sft": "leave it out of checkpoints, or run `proactive sft --clean` again",
    "policy": "leave it out of checkpoints, or run `proactive grpo --clean` again",
}


class MissingCheckpoint(UserError):
    """A well-formed spec that names nothing published in this run (yet)."""


@dataclass(frozen=True)
class Checkpoint:
    label: str  # the column name in the report
    spec: str  # what was asked for, e.g. "sft:all"
    kind: str  # base | sft | policy | folder
    path: Path
    number: int | None = None  # SFT epoch or policy version
    marker: dict[str, Any] = field(default_factory=dict)  # STABLE.json metadata, files dropped

    def describe(self, root: Path) -> dict[str, Any]:
        """For report.json: the folder relative to the run directory `root` when inside it."""
        return {
            "label": self.label,
            "spec": self.spec,
            "kind": self.kind,
            "path": record_path(self.path, root),
            "number": self.number,
            "marker": self.marker,
        }


def _meta(folder: Path) -> dict[str, Any]:
    if not is_stable(folder):
        return {}
    return {k: v for k, v in read_marker(folder).items() if k != "files"}


def _sft(number: int, folder: Path, spec: str) -> Checkpoint:
    return Checkpoint(sft_label(number), spec, "sft", folder, number, _meta(folder))


def _policy(number: int, folder: Path, spec: str) -> Checkpoint:
    return Checkpoint(policy_label(number), spec, "policy", folder, number, _meta(folder))


def _number(spec: str) -> int:
    raw = spec.split(":", 1)[1]
    if not raw.isdigit():
        raise UserError(f"checkpoint {spec!r}: {raw!r} is not a number; valid specs: {VALID}")
    return int(raw)


def _inside(path: Path, parent: Path) -> bool:
    return path.resolve().is_relative_to(parent.resolve())


def _model_folder(spec: str, paths: RunPaths) -> Path:
    """A checkpoint the user named by its folder (or a built-in model)."""
    from proactive_rl.engine.models import resolve_base_model

    if not spec.startswith("builtin:") and not Path(spec).expanduser().is_dir():
        raise UserError(
            f"checkpoint {spec!r}: {Path(spec).expanduser().absolute()} is not a folder; pass "
            f"the folder of a Hugging Face model that exists, or one of: {VALID}"
        )
    return resolve_base_model(spec, paths.base_models)


def _recorded_model(recorded: str, where: Path, paths: RunPaths) -> Path:
    """The base model a stage recorded in `where`: a built-in model, or a folder named relative
    to the run directory (absolute when outside it)."""
    from proactive_rl.engine.models import resolve_base_model

    if recorded.startswith("builtin:"):
        return resolve_base_model(recorded, paths.base_models)
    folder = resolve_recorded(recorded, paths.root)
    if not folder.is_dir():
        raise UserError(
            f"the base model recorded in {where} ({recorded!r}) is not a folder here ({folder}): "
            "pass its folder as a checkpoint instead of 'base' (--set "
            "checkpoints=/path/to/model,sft,final)"
        )
    return resolve_base_model(str(folder), paths.base_models)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def base_model(paths: RunPaths) -> Path:
    """The model this run started from, before SFT or RL.

    Read from what the stages recorded, most reliable first: the starting model in policy 0's
    marker (when it is not one of this run's SFT epochs, RL started from the base itself), the
    base_model in an SFT epoch's marker or configs/sft.json, then configs/grpo.json init_model.
    """
    shared_sft = shared_sft_epoch(paths)
    if shared_sft is not None:  # RL started from another run's SFT: the base is that SFT's
        folder = shared_sft[1]
        return _recorded_model(
            _meta(folder)["base_model"], folder / "STABLE.json", RunPaths(folder.parents[1])
        )
    if is_stable(paths.policy(0)):
        init = _meta(paths.policy(0)).get("init_model")
        if init and not _inside(resolve_recorded(init, paths.root), paths.sft):
            return _recorded_model(init, paths.policy(0) / "STABLE.json", paths)
    epochs = [f for _, f in published(paths.sft, EPOCH_RE)]
    records = [(epochs[-1] / "STABLE.json", _meta(epochs[-1]).get("base_model"))] if epochs else []
    records += [
        (paths.config("sft"), _read_config(paths.config("sft")).get("base_model")),
        (paths.config("grpo"), _read_config(paths.config("grpo")).get("init_model")),
    ]
    for where, spec in records:
        if spec and spec != "sft":
            return _recorded_model(spec, where, paths)
    raise MissingCheckpoint(
        f"no base model recorded in {paths.root} (no policy 0, SFT epoch or stage config)"
    )


def shared_sft_epoch(paths: RunPaths) -> tuple[int, Path] | None:
    """The SFT epoch of another run that this run's RL started from (a sweep's shared SFT), as
    (epoch, folder); None when RL started from this run's own SFT, a base model or nothing yet.
    `sft` and `base` then name that epoch and its base model."""
    init = rl_init_model(paths)
    if not init or init.startswith("builtin:"):
        return None
    folder = resolve_recorded(init, paths.root)
    match = EPOCH_RE.match(folder.name)
    if match is None or _inside(folder, paths.sft) or "base_model" not in _meta(folder):
        return None
    return int(match.group(1)), folder


def rl_init_model(paths: RunPaths) -> str | None:
    """The model RL started from as recorded: policy 0's marker, or configs/grpo.json once
    keep_policies has pruned policy 0 (a long run keeps only its last policies)."""
    if is_stable(paths.policy(0)):
        return _meta(paths.policy(0)).get("init_model")
    if not paths.plan.is_file():  # no RL has started here
        return None
    return _read_config(paths.config("grpo")).get("init_model")


def resolve_spec(spec: str, paths: RunPaths) -> list[Checkpoint]:
    """The published checkpoints one spec names, in order; MissingCheckpoint when none."""
    if spec == "base":
        return [Checkpoint("base", spec, "base", base_model(paths))]
    if spec in ("sft", "sft:all") or spec.startswith("sft:"):
        return _sft_spec(spec, paths)
    if spec in ("final", "policies:all") or spec.startswith("policy:"):
        return _policy_spec(spec, paths)
    if spec == "rl:epochs":
        return _epoch_ends(spec, paths)
    if spec.startswith("builtin:") or "/" in spec or Path(spec).expanduser().exists():
        folder = _model_folder(spec, paths)
        return [Checkpoint(folder.name, spec, "folder", folder, None, _meta(folder))]
    raise UserError(f"unknown checkpoint {spec!r}; valid specs: {VALID}")


def _sft_spec(spec: str, paths: RunPaths) -> list[Checkpoint]:
    """sft (the last published epoch), sft:all or sft:N."""
    if spec in ("sft", "sft:all"):
        epochs = published(paths.sft, EPOCH_RE)
        shared = shared_sft_epoch(paths) if not epochs else None
        if shared is not None:
            return [_sft(*shared, spec)]
        if not epochs:
            raise MissingCheckpoint(f"{spec}: {paths.sft} has no published SFT epoch")
        chosen = epochs if spec == "sft:all" else epochs[-1:]
        return [_sft(n, f, spec) for n, f in chosen]
    number = _number(spec)
    if not is_stable(paths.sft_epoch(number)):
        raise MissingCheckpoint(f"{spec}: SFT epoch {number} is not published in {paths.sft}")
    return [_sft(number, paths.sft_epoch(number), spec)]


def _policy_spec(spec: str, paths: RunPaths) -> list[Checkpoint]:
    """final (the last published policy), policies:all or policy:N."""
    if spec in ("final", "policies:all"):
        policies = published(paths.policies)
        if not policies:
            raise MissingCheckpoint(f"{spec}: {paths.policies} has no published policy")
        chosen = policies if spec == "policies:all" else policies[-1:]
        return [_policy(n, f, spec) for n, f in chosen]
    number = _number(spec)
    if not is_stable(paths.policy(number)):
        raise MissingCheckpoint(
            f"{spec}: policy version {number} is not published in {paths.policies}"
        )
    return [_policy(number, paths.policy(number), spec)]


def _epoch_ends(spec: str, paths: RunPaths) -> list[Checkpoint]:
    """Policy version steps_per_epoch * e for every RL epoch e that is published (policy v is
    the model after v steps). Unpublished or pruned ones are skipped with a log line."""
    from proactive_rl.shared.schedule import read_plan

    if not paths.plan.is_file():
        raise MissingCheckpoint(f"{spec}: no RL plan at {paths.plan}")
    plan = read_plan(paths.plan)
    found = []
    for epoch in range(1, plan.epochs + 1):
        version = epoch * plan.steps_per_epoch
        folder = paths.policy(version)
        if is_stable(folder) and _meta(folder).get("plan_id") == plan.plan_id:
            found.append(_policy(version, folder, spec))
        else:
            logger.info(
                "%s: RL epoch %d (policy %d) is not published: skipped", spec, epoch, version
            )
    if not found:
        raise MissingCheckpoint(f"{spec}: no RL epoch has finished in {paths.policies}")
    return found


def resolve_checkpoints(specs: list[str] | None, paths: RunPaths) -> list[Checkpoint]:
    """Resolve the specs (None = DEFAULT_SPECS, skipping missing ones), dropping a folder that an
    earlier spec already named and making labels unique."""
    explicit = specs is not None
    found: list[Checkpoint] = []
    for spec in specs if explicit else DEFAULT_SPECS:
        try:
            found.extend(resolve_spec(spec, paths))
        except MissingCheckpoint as err:
            if explicit:
                raise
            logger.info("default checkpoint %r skipped: %s", spec, err)
    out: list[Checkpoint] = []
    seen: set[Path] = set()
    labels: set[str] = set()
    for ckpt in found:
        if ckpt.path.resolve() in seen:
            logger.info("%s (%s) is already in the report: skipped", ckpt.spec, ckpt.path)
            continue
        seen.add(ckpt.path.resolve())
        label, i = ckpt.label, 2
        while label in labels:
            label, i = f"{ckpt.label}_{i}", i + 1
        labels.add(label)
        out.append(ckpt if label == ckpt.label else _relabel(ckpt, label))
        if ckpt.kind in DAMAGED:
            check_model_folder(ckpt.path, DAMAGED[ckpt.kind])
    if not out:
        raise UserError(
            f"nothing to evaluate in {paths.root}: no base model, SFT epoch or policy is "
            f"published; run the training stages first or set checkpoints ({VALID})"
        )
    return out


def _relabel(ckpt: Checkpoint, label: str) -> Checkpoint:
    return Checkpoint(label, ckpt.spec, ckpt.kind, ckpt.path, ckpt.number, ckpt.marker)

#!/usr/bin/env python3
"""Progress of a pipeline run, read from its run directory while the containers run.

`make demo` (scripts/smoke.sh) starts this in the background beside `compose up` and stops it
after: every few seconds it reads what the stages already write (status/<stage>.json,
logs/<stage>/metrics.jsonl, policies/plan.json, configs/<stage>.json) and prints one line per
change: a stage starting, finishing or failing, and its step k of n with the stage's numbers
(SFT loss, GRPO reward and hedging rate, each evaluated checkpoint's rates) and the time left at
the pace so far. Step lines of one stage come at most every --min-gap seconds (SFT logs every
step), the last step always.

Stdlib only, on purpose: the host that runs `make demo` has Docker, not the project's venv, so
the package `proactive_rl` is not importable here. The run layout still comes from its one
owner, shared/paths.py (stdlib only itself), loaded by file path.

Usage: scripts/demo_progress.py checkpoints/demo [--interval 2] [--min-gap 10]
       [--while-pid PID] [--once]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PREFIX = "progress:"
# The stages with a status file in the run directory, in pipeline order (prep writes only data/).
STAGES = ("sft", "rollout", "grpo", "eval")


def _load_paths() -> Any:
    spec = importlib.util.spec_from_file_location("_run_paths", REPO / "shared" / "paths.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up while building classes
    spec.loader.exec_module(module)
    return module


paths = _load_paths()


def _json(path: Path) -> dict[str, Any]:
    """A JSON file, or {} while it is missing or half-written (the stages replace files
    atomically, but a reader on another mount may still race a writer)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's step records (a line still being appended is skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record and "event" not in record:
            out.append(record)
    return out


@dataclass
class Progress:
    """What one stage shows now."""

    state: str | None = None  # running, done, failed; None: not started
    error: str | None = None
    step: int | None = None
    total: int | None = None
    unit: str = "step"
    numbers: str = ""  # the stage's own figures at `step`
    left_s: float | None = None  # at the pace so far


def _pace(records: list[dict[str, Any]], total: int | None) -> float | None:
    """Seconds left for the steps not yet logged, at the mean pace between the first and the
    last record (None until two records are there)."""
    if total is None or len(records) < 2:
        return None
    first, last = records[0], records[-1]
    done = last["step"] - first["step"]
    if done <= 0:
        return None
    return max(0.0, (last["time"] - first["time"]) / done * (total - last["step"]))


def _done(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of a stage that numbers its steps from 0 (grpo's step k, eval's checkpoint k),
    renumbered as the count done once each is logged, as SFT's are."""
    return [{**r, "step": r["step"] + 1} for r in records]


def sft_progress(run: Any) -> Progress:
    records = _records(run.logs("sft") / "metrics.jsonl")
    if not records:
        return Progress()
    last = records[-1]
    total = None
    epochs = _json(run.config("sft")).get("epochs")
    # HF Trainer logs the fractional epoch: step / epoch is the steps of one epoch.
    if epochs and last.get("epoch"):
        total = round(last["step"] / last["epoch"]) * int(epochs)
    # The trainer's closing record (its run time) has no loss: show the last one logged.
    losses = [r["loss"] for r in records if isinstance(r.get("loss"), (int, float))]
    numbers = f"loss {losses[-1]:.3f}" if losses else ""
    return Progress(step=last["step"], total=total, numbers=numbers, left_s=_pace(records, total))


def grpo_progress(run: Any) -> Progress:
    total = _json(run.plan).get("total_steps")
    records = [r for r in _records(run.logs("grpo") / "metrics.jsonl") if "reward/mean" in r]
    if not records:
        return Progress(total=total)
    last = records[-1]
    parts = [f"reward {last['reward/mean']:.3f}"]
    hedged = last.get("reward/proactive_rate")
    if isinstance(hedged, (int, float)):
        parts.append(f"hedged {hedged:.0%}")
    return Progress(
        step=last["step"] + 1,
        total=total,
        numbers=", ".join(parts),
        left_s=_pace(_done(records), total),
    )


def _eval_total(run: Any) -> int:
    named = _json(run.config("eval")).get("checkpoints")
    if named:
        return len(named)
    # The default is base, sft and final, less those the run does not have.
    has_sft = bool(paths.numbered_children(run.sft, paths.EPOCH_RE))
    has_policy = any(n > 0 for n, _ in paths.numbered_children(run.policies))
    return 1 + has_sft + has_policy


def eval_progress(run: Any) -> Progress:
    records = _records(run.logs("eval") / "metrics.jsonl")
    if not records:
        return Progress(unit="checkpoint")
    last = records[-1]
    # Never fewer than evaluated (the run's folders may have been pruned since).
    total = max(_eval_total(run), last["step"] + 1)
    rates = [
        ("well formed", "eval/format_rate"),
        ("correct", "eval/accuracy"),
        ("hedged", "eval/proactive_rate"),
    ]
    shown = ", ".join(f"{name} {last[k]:.0%}" for name, k in rates if k in last)
    return Progress(
        step=last["step"] + 1,
        total=total,
        unit="checkpoint",
        numbers=f"{last.get('checkpoint', '?')}: {shown}",
        left_s=_pace(_done(records), total),
    )


def _eval_status(run: Any, stage: str) -> dict[str, Any]:
    """eval writes no status file: it runs once its config is written (at its start) and is
    done once its report folder is published (STABLE.json, written last)."""
    config = run.config(stage)
    if stage != "eval" or not config.is_file():
        return {}
    name = _json(config).get("name", "report")
    done = (run.eval_dir(name) / "STABLE.json").is_file()
    return {"state": "done" if done else "running"}


READERS = {"sft": sft_progress, "grpo": grpo_progress, "eval": eval_progress}


def observe(run_dir: Path) -> dict[str, Progress]:
    """Every stage's progress as the run directory shows it now."""
    run = paths.RunPaths(Path(run_dir))
    out = {}
    for stage in STAGES:
        reader = READERS.get(stage)
        progress = reader(run) if reader else Progress()
        status = _json(run.status(stage)) or _eval_status(run, stage)
        progress.state = status.get("state")
        progress.error = status.get("error")
        out[stage] = progress
    return out


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


def step_line(stage: str, p: Progress) -> str:
    of = f"/{p.total}" if p.total else ""
    parts = [f"{p.unit} {p.step}{of}"]
    if p.numbers:
        parts.append(p.numbers)
    if p.left_s is not None and p.step != p.total:
        parts.append(f"~{_duration(p.left_s)} left")
    return f"{PREFIX} {stage:<7} " + "  ".join(parts)


def state_line(stage: str, p: Progress, took: float | None) -> str:
    text = {"running": "started", "done": "done", "failed": "FAILED"}.get(p.state or "", p.state)
    if p.state == "done" and took is not None:
        text += f" after ~{_duration(took)}"
    if p.state == "failed" and p.error:
        text += f": {p.error.splitlines()[0][:200]}"
    return f"{PREFIX} {stage:<7} {text}"


@dataclass
class Watcher:
    """Turns successive observations into lines: one per state change, one per new step (at
    most every `min_gap` seconds per stage, the last step always)."""

    min_gap: float = 10.0
    states: dict[str, str | None] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int | None] = field(default_factory=dict)
    printed: dict[str, float] = field(default_factory=dict)

    def lines(self, seen: dict[str, Progress], now: float) -> list[str]:
        out = []
        for stage, p in seen.items():
            if p.state == "running" and stage not in self.started:
                self.started[stage] = now
            state = []
            if p.state != self.states.get(stage):
                self.states[stage] = p.state
                if p.state is not None:
                    began = self.started.get(stage)
                    state = [state_line(stage, p, None if began is None else now - began)]
            # A start reads before the stage's first step, an end after its last.
            ended = p.state in ("done", "failed")
            out += [] if ended else state
            if p.step is not None and p.step != self.steps.get(stage):
                due = now - self.printed.get(stage, -self.min_gap) >= self.min_gap
                if due or p.step == p.total or ended:
                    out.append(step_line(stage, p))
                    self.steps[stage] = p.step
                    self.printed[stage] = now
            out += state if ended else []
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between reads")
    parser.add_argument("--min-gap", type=float, default=10.0, help="seconds between step lines")
    parser.add_argument("--while-pid", type=int, help="stop when this process has ended")
    parser.add_argument("--once", action="store_true", help="print what is there now and stop")
    args = parser.parse_args(argv)
    watcher = Watcher(min_gap=0.0 if args.once else args.min_gap)
    while True:
        for line in watcher.lines(observe(args.run_dir), time.monotonic()):
            print(line, flush=True)
        done = watcher.states.get("eval") in ("done", "failed")
        if args.once or done or (args.while_pid and not _alive(args.while_pid)):
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())

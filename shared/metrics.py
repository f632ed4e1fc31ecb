"""Metrics: every number a user sees goes to `metrics.jsonl`, to tensorboard and to the trackers
a stage's `tracking.logger` names (shared/trackers.py)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proactive_rl.shared.trackers import Sink

logger = logging.getLogger(__name__)


def setup_logging(verbose: bool = False) -> None:
    """Configure logging once, for the CLI process."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf become null: strict JSON readers (jq, browsers) reject them."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()
    }


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics record: what tensorboard and the trackers plot.

    >>> scalars({"reward": 0.5, "ok": True, "loss": float("nan"), "name": "x", "n": 3})
    {'reward': 0.5, 'n': 3.0}
    """
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class MetricsLogger:
    """Appends one JSON object per step to `log_dir/metrics.jsonl` and mirrors the scalars to
    tensorboard (imported lazily: it pulls in torch) and to `sinks`, the other trackers.

    `resume_at`: a resumed run logs again from this step on. Lines of that step and later
    (logged before the crash, about to be logged again) and a torn last line (killed while
    writing it) are dropped, and tensorboard hides its earlier events from that step on, so
    every step keeps exactly one line. `event` then records where the run resumed.
    """

    def __init__(
        self,
        log_dir: Path,
        tensorboard: bool = True,
        resume_at: int | None = None,
        sinks: Sequence[Sink] = (),
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / "metrics.jsonl"
        self.dropped = 0 if resume_at is None else self._drop_from(resume_at)
        self._writer = None
        self.sinks = list(sinks)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_at)

    def _drop_from(self, step: int) -> int:
        """Keep the whole lines of steps before `step` (rewritten atomically); how many went."""
        if not self.path.is_file():
            return 0
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) < step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as fh:
            fh.write("".join(line + "\n" for line in kept))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return len(lines) - len(kept)

    def steps(self) -> set[int]:
        """The steps that have a metrics line (event lines aside)."""
        if not self.path.is_file():
            return set()
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        return {r["step"] for r in records if "event" not in r}

    def event(self, step: int, event: str, **fields: Any) -> None:
        """A line that is not a step's metrics, e.g. {"event": "resume", "step": 12}: readers
        that want one line per step skip lines with an "event" key."""
        self._append({"step": step, "time": time.time(), "event": event, **fields})

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._append({"step": step, "time": time.time(), **json_safe(metrics)})
        numbers = scalars(metrics)
        if self._writer is not None:
            for key, value in numbers.items():
                self._writer.add_scalar(key, value, step)
            self._writer.flush()
        for sink in self.sinks:
            sink.log(step, numbers)

    def files(self, paths: list[Path], folder: str) -> None:
        """Attach files (a report, its plots) to the trackers' runs, under `folder`."""
        for sink in self.sinks:
            sink.files(paths, folder)

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        for sink in self.sinks:
            sink.close()


def _step_of(line: str) -> int | None:
    """The step of a whole metrics line; None for a torn (partly written) one."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(log_dir: Path) -> list[dict[str, Any]]:
    path = log_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

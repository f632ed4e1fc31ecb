"""Experiment trackers, veRL's `trainer.logger`: console, tensorboard, wandb, mlflow.

metrics.jsonl is always written (shared/metrics.py); `tracking.logger` names what else gets every
number. Offline first, as this machine, CI and many clusters are:

- wandb: offline runs under <run>/trackers/wandb (`wandb sync <run>/trackers/wandb/offline-run-*`
  uploads them later); `tracking.wandb_mode=online` logs live (WANDB_API_KEY in the environment).
- mlflow: a SQLite store <run>/trackers/mlflow.db with its artifacts beside it
  (`mlflow ui --backend-store-uri sqlite:///<run>/trackers/mlflow.db`), or the server that
  `tracking.mlflow_uri` (or MLFLOW_TRACKING_URI) names, so several runs share one store.

One W&B group and one MLflow experiment per run directory (`tracking.experiment`, by default the
run directory's name), one tracker run per stage, holding the stage's resolved config. A resumed
stage continues its own tracker run (the ids are kept in <run>/trackers/<stage>.json).
Credentials come only from the environment (WANDB_API_KEY, MLFLOW_TRACKING_TOKEN, ...): they are
never config fields, so they never reach configs/ or the logs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.metrics import MetricsLogger
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.publish import read_json, write_json_atomic

logger = logging.getLogger(__name__)

Logger = Literal["console", "tensorboard", "wandb", "mlflow"]
LOGGERS: tuple[str, ...] = ("console", "tensorboard", "wandb", "mlflow")
LOGGER_ENV = "PROACTIVE_LOGGER"
# MLflow's limits: 100 params per batch call, 6000 characters per param value
MLFLOW_BATCH = 100
MLFLOW_PARAM_CHARS = 6000


def parse_loggers(raw: str | list[str]) -> list[str]:
    """veRL's list syntax, a JSON list or a comma-separated string; order kept, repeats dropped.

    >>> parse_loggers("['console','wandb']"), parse_loggers("tensorboard, mlflow")
    (['console', 'wandb'], ['tensorboard', 'mlflow'])
    """
    if isinstance(raw, str):
        raw = [p.strip().strip("'\"") for p in raw.strip().strip("[]").split(",")]
    names = [str(name).strip() for name in raw if str(name).strip()]
    return list(dict.fromkeys(names))


class TrackingConfig(BaseModel):
    """Where a stage's numbers go besides metrics.jsonl (every stage has one, `tracking`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    logger: list[Logger] = Field(
        default_factory=lambda: ["console", "tensorboard"],
        description="Trackers (veRL trainer.logger): any of console (a line per step in the "
        "log), tensorboard (logs/<stage>), wandb (offline by default), mlflow (a SQLite store "
        "in the run directory by default). Env PROACTIVE_LOGGER (compose/k8s knob LOGGER), "
        "e.g. console,tensorboard,wandb. The default is the users' recipe's.",
    )
    project: str = Field(
        "proactive_agent",
        min_length=1,
        description="W&B project (veRL trainer.project_name; the users' recipe's name).",
    )
    experiment: str | None = Field(
        None,
        min_length=1,
        description="W&B group and MLflow experiment that the stages' runs go in (veRL "
        "trainer.experiment_name); None = the run directory's name.",
    )
    wandb_mode: Literal["offline", "online"] = Field(
        "offline",
        description="offline: runs written under <run>/trackers/wandb, `wandb sync` later; "
        "online: live (needs WANDB_API_KEY in the environment, never in a config).",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI (a server, or sqlite:///path shared by several runs); "
        "None = MLFLOW_TRACKING_URI if set, else <run>/trackers/mlflow.db.",
    )

    @field_validator("logger", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_loggers(value) if isinstance(value, (str, list)) else value


def pipeline_loggers(environ: Mapping[str, str] = os.environ) -> list[str] | None:
    """The pipeline's LOGGER knob (env PROACTIVE_LOGGER) for every stage; unset = their default.

    >>> pipeline_loggers({"PROACTIVE_LOGGER": "console,wandb"}), pipeline_loggers({})
    (['console', 'wandb'], None)
    """
    raw = environ.get(LOGGER_ENV, "").strip()
    if not raw:
        return None
    names = parse_loggers(raw)
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise UserError(
            f"{LOGGER_ENV}={raw!r}: unknown tracker {unknown[0]!r} (compose/k8s knob LOGGER; "
            f"any of {', '.join(LOGGERS)})"
        )
    return names


class Sink(Protocol):
    """A tracker that receives what MetricsLogger logs."""

    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def files(self, paths: list[Path], folder: str) -> None: ...

    def close(self) -> None: ...


class ConsoleSink:
    """veRL's console logger: one line per step with every number."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def log(self, step: int, scalars: dict[str, float]) -> None:
        shown = " ".join(f"{k}:{v:.4g}" for k, v in sorted(scalars.items()))
        logger.info("%s step:%d - %s", self.stage, step, shown)

    def files(self, paths: list[Path], folder: str) -> None:
        pass

    def close(self) -> None:
        pass


class WandbSink:
    """One W&B run per stage, grouped per run directory."""

    def __init__(self, tracking: TrackingConfig, ctx: TrackerRun, run_id: str) -> None:
        import wandb

        folder = ctx.paths.trackers
        folder.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        self.run = wandb.init(
            project=tracking.project,
            group=ctx.experiment,
            job_type=ctx.stage,
            name=f"{ctx.experiment}/{ctx.stage}",
            id=run_id,
            resume="allow",
            dir=str(folder),
            config=ctx.config,
            mode=tracking.wandb_mode,
            save_code=False,
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def files(self, paths: list[Path], folder: str) -> None:
        images = {
            f"{folder}/{p.stem}": self._wandb.Image(str(p)) for p in paths if p.suffix == ".png"
        }
        if images:
            self.run.log(images)
        for path in paths:
            self.run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self) -> None:
        self.run.finish()


_MLFLOW_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


class MlflowSink:
    """One MLflow run per stage, in the run directory's experiment."""

    def __init__(self, tracking: TrackingConfig, ctx: TrackerRun, run_id: str | None) -> None:
        from mlflow import MlflowClient

        folder = ctx.paths.trackers
        folder.mkdir(parents=True, exist_ok=True)
        uri = tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        local = not uri
        uri = uri or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        # rollout and grpo start together: one creates the store's tables and the experiment
        with _file_lock(folder / ".mlflow.lock"):
            self.client = MlflowClient(tracking_uri=uri)
            experiment = self.client.get_experiment_by_name(ctx.experiment)
            if experiment is None:
                where = (folder / "artifacts").resolve().as_uri() if local else None
                experiment_id = self.client.create_experiment(ctx.experiment, where)
            else:
                experiment_id = experiment.experiment_id
        if run_id is None:
            run = self.client.create_run(
                experiment_id, run_name=ctx.stage, tags={"stage": ctx.stage}
            )
            self.run_id = run.info.run_id
            self._params(ctx.config)
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")

    def _params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:MLFLOW_PARAM_CHARS]) for k, v in _flatten(config).items()]
        for i in range(0, len(flat), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=flat[i : i + MLFLOW_BATCH])
        self.client.log_dict(self.run_id, config, "config.json")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_MLFLOW_KEY.sub("_", k), v, now, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MLFLOW_BATCH])

    def files(self, paths: list[Path], folder: str) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), folder)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class TrackerRun:
    """What a stage's tracker runs are named by: its stage, run directory and resolved config."""

    def __init__(self, paths: RunPaths, stage: str, config: dict[str, Any], experiment: str):
        self.paths, self.stage, self.config, self.experiment = paths, stage, config, experiment


def open_sinks(
    tracking: TrackingConfig, paths: RunPaths, stage: str, config: BaseModel, resume: bool
) -> list[Sink]:
    """The trackers `tracking.logger` names besides tensorboard, started for `stage`. A resumed
    stage continues the tracker runs it started (their ids are in <run>/trackers/<stage>.json);
    a new start begins new ones."""
    experiment = tracking.experiment or paths.root.resolve().name
    ctx = TrackerRun(paths, stage, config.model_dump(mode="json"), experiment)
    ids_path = paths.trackers / f"{stage}.json"
    ids = read_json(ids_path) if resume and ids_path.is_file() else {}
    sinks: list[Sink] = []
    if "console" in tracking.logger:
        sinks.append(ConsoleSink(stage))
    if "wandb" in tracking.logger:
        ids.setdefault("wandb", uuid.uuid4().hex[:16])
        sinks.append(WandbSink(tracking, ctx, ids["wandb"]))
    if "mlflow" in tracking.logger:
        mlflow = MlflowSink(tracking, ctx, ids.get("mlflow"))
        ids["mlflow"] = mlflow.run_id
        sinks.append(mlflow)
    if ids:
        write_json_atomic(ids_path, ids)
    return sinks


def open_metrics(
    tracking: TrackingConfig,
    paths: RunPaths,
    stage: str,
    config: BaseModel,
    resume_at: int | None = None,
    resume_trackers: bool | None = None,
) -> MetricsLogger:
    """metrics.jsonl in logs/<stage>, mirrored to every tracker named. `resume_at`: lines from
    that step on are dropped (shared/metrics.py); the stage then continues its tracker runs
    unless `resume_trackers` says otherwise."""
    resume = resume_at is not None if resume_trackers is None else resume_trackers
    return MetricsLogger(
        paths.logs(stage),
        tensorboard="tensorboard" in tracking.logger,
        resume_at=resume_at,
        sinks=open_sinks(tracking, paths, stage, config, resume=resume),
    )


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

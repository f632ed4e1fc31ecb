"""The trackers of trainer.logger, with the real W&B (offline) and MLflow (SQLite) libraries:
what they hold is read back and compared with metrics.jsonl."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel, Field, ValidationError

from proactive_rl.shared.config import load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.trackers import TrackingConfig, open_metrics, pipeline_loggers
from tests.tracker_records import mlflow_runs, numbers_by_step, wandb_runs


class Settings(BaseModel):
    lr: float = 1e-3
    nested: dict = Field(default_factory=lambda: {"beta": 0.3})
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


ALL = TrackingConfig(logger=["console", "tensorboard", "wandb", "mlflow"])


def _numbers(history: dict[int, dict]) -> dict[int, dict[str, float]]:
    return {
        step: {
            k: float(v)
            for k, v in items.items()
            if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for step, items in history.items()
    }


def test_logger_accepts_verls_list_syntax_and_rejects_unknown_trackers():
    assert TrackingConfig(logger="['console','wandb']").logger == ["console", "wandb"]
    assert TrackingConfig(logger='["mlflow"]').logger == ["mlflow"]
    assert TrackingConfig(logger="tensorboard,wandb,wandb").logger == ["tensorboard", "wandb"]
    assert TrackingConfig().logger == ["console", "tensorboard"]  # the users' recipe's
    with pytest.raises(ValidationError):
        TrackingConfig(logger=["console", "swanlab"])


def test_the_logger_knob_sets_every_stage_and_a_bad_one_is_one_line(monkeypatch):
    from proactive_rl.stages.grpo.config import GrpoConfig

    monkeypatch.setenv("PROACTIVE_LOGGER", "console,mlflow")
    assert load_config(GrpoConfig, stage="grpo").tracking.logger == ["console", "mlflow"]
    # --set wins over the knob
    config = load_config(GrpoConfig, overrides=["tracking.logger=[wandb]"], stage="grpo")
    assert config.tracking.logger == ["wandb"]
    with pytest.raises(UserError, match="unknown tracker 'neptune'.*knob LOGGER"):
        pipeline_loggers({"PROACTIVE_LOGGER": "console,neptune"})


def test_wandb_and_mlflow_hold_the_metrics_jsonl_numbers_and_the_config(tmp_path, caplog):
    paths = RunPaths(tmp_path / "exp-1")
    settings = Settings(tracking=ALL)
    with caplog.at_level(logging.INFO):
        log = open_metrics(settings.tracking, paths, "grpo", settings)
        for step in range(4):
            log.log(step, {"reward/mean": 0.1 * step, "loss": 2.0 - step, "ok": True, "x": "a"})
        log.log(4, {"reward/mean": float("nan"), "loss": -1.5})
        report = tmp_path / "report.md"
        report.write_text("| checkpoint | accuracy |\n")
        log.files([report], "report")
        log.close()
    expected = numbers_by_step(paths.logs("grpo") / "metrics.jsonl")
    assert expected[2] == {"reward/mean": pytest.approx(0.2), "loss": 0.0}
    assert expected[4] == {"loss": -1.5}  # NaN is null in the JSONL and absent in trackers
    assert "grpo step:3 - loss:-1 reward/mean:0.3" in caplog.text  # console

    (run,) = wandb_runs(paths.root)
    assert (run.group, run.job_type, run.name) == ("exp-1", "grpo", "exp-1/grpo")
    assert run.config["lr"] == 1e-3 and run.config["nested"] == {"beta": 0.3}
    assert _numbers(run.history) == expected
    assert "report.md" in run.files

    runs = mlflow_runs(paths.root, "exp-1")
    mlrun, histories, artifacts, _ = runs["grpo"]
    assert mlrun.data.params["lr"] == "0.001" and mlrun.data.params["nested.beta"] == "0.3"
    by_step: dict[int, dict[str, float]] = {}
    for key, values in histories.items():
        for step, value in values.items():
            by_step.setdefault(step, {})[key] = value
    assert by_step == expected
    assert {"config.json", "report"} <= set(artifacts)
    assert mlrun.info.status == "FINISHED"


def test_a_resumed_stage_continues_its_tracker_runs_and_a_new_start_begins_new_ones(tmp_path):
    paths = RunPaths(tmp_path / "run")
    settings = Settings(tracking=TrackingConfig(logger=["wandb", "mlflow"]))
    first = open_metrics(settings.tracking, paths, "sft", settings)
    first.log(0, {"loss": 3.0})
    first.log(1, {"loss": 2.0})  # logged before a kill, logged again on resume
    first.close()
    resumed = open_metrics(settings.tracking, paths, "sft", settings, resume_at=1)
    resumed.log(1, {"loss": 1.5})
    resumed.close()
    runs = mlflow_runs(paths.root, "run")
    assert list(runs) == ["sft"]  # one run, continued
    mlrun, _, _, client = runs["sft"]
    history = client.get_metric_history(mlrun.info.run_id, "loss")
    assert 1.5 in [m.value for m in history if m.step == 1]
    assert [m.value for m in history if m.step == 0] == [3.0]
    offline = wandb_runs(paths.root)  # W&B writes a resumed run as a second offline file
    assert len(offline) == 2 and len({r.run_id for r in offline}) == 1
    assert sorted(r.history.get(1, {}).get("loss", 0.0) for r in offline) == [1.5, 2.0]
    again = open_metrics(settings.tracking, paths, "sft", settings)  # a new start (--clean)
    again.log(0, {"loss": 9.0})
    again.close()
    assert len({r.run_id for r in wandb_runs(paths.root)}) == 2
    client = mlflow_runs(paths.root, "run")["sft"][3]
    experiment = client.get_experiment_by_name("run")
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_tensorboard_only_when_named(tmp_path):
    paths = RunPaths(tmp_path / "run")
    settings = Settings(tracking=TrackingConfig(logger=["console"]))
    log = open_metrics(settings.tracking, paths, "eval", settings)
    log.log(0, {"accuracy": 0.5})
    log.close()
    assert (paths.logs("eval") / "metrics.jsonl").is_file()
    assert not list(paths.logs("eval").glob("events.out.tfevents*"))
    assert not paths.trackers.exists()

"""Read back what the real trackers wrote offline: W&B's offline run files and MLflow's SQLite
store, so tests compare them with metrics.jsonl."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# W&B's .wandb file: a 7-byte header (":W&B", a magic and a version), then LevelDB-log records
# in 32 KiB blocks: crc32 (4 bytes), length (2), type (1: full, 2: first, 3: middle, 4: last).
WANDB_BLOCK = 32768
WANDB_RECORD_HEADER = 7


@dataclass
class WandbRun:
    run_id: str
    group: str
    name: str
    job_type: str
    config: dict[str, Any] = field(default_factory=dict)
    history: dict[int, dict[str, float]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, records, pending = WANDB_RECORD_HEADER, [], b""
    while pos + WANDB_RECORD_HEADER <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < WANDB_RECORD_HEADER:  # the block's trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + WANDB_RECORD_HEADER])
        chunk = data[pos + WANDB_RECORD_HEADER : pos + WANDB_RECORD_HEADER + length]
        pos += WANDB_RECORD_HEADER + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    return records


def wandb_run(path: Path) -> WandbRun:
    """One offline run (its run-*.wandb file): identity, config, history by step, saved files."""
    from wandb.proto import wandb_internal_pb2 as pb

    run: WandbRun | None = None
    history: dict[int, dict[str, float]] = {}
    files: list[str] = []
    for chunk in _chunks(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(chunk)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            config = {u.key: json.loads(u.value_json) for u in r.config.update}
            run = WandbRun(r.run_id, r.run_group, r.display_name, r.job_type, config)
        elif kind == "history":
            items = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in record.history.item
            }
            step = int(items.pop("_step"))
            history.setdefault(step, {}).update(items)
        elif kind == "files":
            files += [f.path for f in record.files.files]
    assert run is not None, f"{path} has no run record"
    run.history, run.files = history, files
    return run


def wandb_runs(run_dir: Path) -> list[WandbRun]:
    folder = run_dir / "trackers" / "wandb"  # latest-run is a link to one of the runs
    return [wandb_run(p) for p in sorted(folder.glob("offline-run-*/run-*.wandb"))]


def mlflow_runs(run_dir: Path, experiment: str) -> dict[str, Any]:
    """stage name -> (run, its metric histories {key: {step: value}}) in the run's store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'trackers' / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    out = {}
    for run in client.search_runs([found.experiment_id]):
        histories = {
            key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            for key in run.data.metrics
        }
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        out[run.info.run_name] = (run, histories, artifacts, client)
    return out


def numbers_by_step(metrics_jsonl: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl's finite numbers by step (event lines and text left out)."""
    out: dict[int, dict[str, float]] = {}
    for line in metrics_jsonl.read_text().splitlines():
        record = json.loads(line)
        if "event" in record:
            continue
        out[record["step"]] = {
            k: float(v)
            for k, v in record.items()
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    return out

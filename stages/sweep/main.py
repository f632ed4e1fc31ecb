"""proactive sweep: a grid of runs in one command, each step a stage's own command (on the host
or as its container), shared prefixes done once, finished work not redone, one comparison report.

    <checkpoints>/sweeps/<name>/
      sweep.json              the plan and, per finished step, its wall time
      logs/<step>.log         each step's output
      sft-<key>/              a shared SFT run (+ its eval: base and SFT)
      <run name>/             one RL run (policies, rollouts, eval/report)
      report/                 report.md, report.json, comparison.png (published atomically)
    <data>/sweeps/<name>/prep-<key>/processed   a shared prep
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click

from proactive_rl.shared.config import describe, load_config
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import EPOCH_RE, RunPaths
from proactive_rl.shared.publish import is_stable, published, read_json, write_json_atomic
from proactive_rl.stages.common import config_options
from proactive_rl.stages.sweep.config import SweepConfig
from proactive_rl.stages.sweep.plan import (
    Prefix,
    Run,
    eval_sets,
    plan,
    sample_cache,
    select,
    sweep_data_root,
    sweep_root,
)

logger = logging.getLogger(__name__)


@click.command(
    help="Run a grid of experiments, each as separate runs named from their settings "
    "(sft50_rl_beta0.5_n16), and compare them in one report with 95% intervals, seeds and wall "
    "times. Runs sharing data or SFT settings share that work; a finished step is not redone, so "
    "the same command resumes an interrupted sweep. Presets: the recipe's experiments "
    "(--preset sft_samples | with_without_sft | beta | recipe). docs/sweeps.md has examples.",
    epilog="\b\nConfig fields (--set key=value):\n" + describe(SweepConfig),
)
@config_options
@click.option(
    "--preset",
    type=click.Choice(["sft_samples", "with_without_sft", "beta", "recipe"]),
    help="The same as --set preset=NAME.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="RUN",
    help="Run just this run of the plan (repeatable; names as --dry-run lists them): a long "
    "sweep in pieces. The same as --set only=[...].",
)
@click.option("--dry-run", is_flag=True, help="List the runs and shared steps; run nothing.")
def command(
    recipe: str | None,
    config_file: Path | None,
    overrides: tuple[str, ...],
    preset: str | None,
    only: tuple[str, ...],
    dry_run: bool,
) -> None:
    if preset:
        overrides = (f"preset={preset}", *overrides)
    if only:
        overrides = (*overrides, f"only={json.dumps(list(only))}")
    config = load_config(SweepConfig, config_file, overrides, recipe or None, "sweep")
    run(config, dry_run=dry_run)


@dataclass(frozen=True)
class Shared:
    """The steps runs share, each once: the distinct preps and SFTs, and each SFT's data."""

    preps: list[Prefix]
    sfts: list[Prefix]
    sft_data: dict[str, Prefix]  # SFT key -> the prep it trains on

    @classmethod
    def of(cls, runs: list[Run]) -> Shared:
        return cls(
            preps=_unique(r.data for r in runs),
            sfts=_unique(r.sft for r in runs if r.sft is not None),
            sft_data={r.sft.key: r.data for r in runs if r.sft is not None},
        )


def run(config: SweepConfig, dry_run: bool = False) -> None:
    check_launcher(config)
    runs = plan(config)
    if not runs:
        raise UserError("the sweep has no runs: give a preset or grids")
    runs = select(runs, config.only)
    root = sweep_root(config)
    shared = Shared.of(runs)
    log_plan(config, runs, shared)
    if dry_run:
        echo_plan(config, runs)
        return
    root.mkdir(parents=True, exist_ok=True)
    state = Ledger(root / "sweep.json", config)
    sets = eval_sets(config)
    if config.launcher == "compose":
        prepare_compose(config, root, [*shared.preps, *sets.values()])
    for prep in [*shared.preps, *sets.values()]:
        prep_step(config, state, prep)
    sft_tasks = [partial(sft_step, config, state, s, shared.sft_data[s.key]) for s in shared.sfts]
    _each(config.jobs, sft_tasks)
    _each(config.jobs, [partial(rl_steps, config, state, r, sets) for r in runs])

    from proactive_rl.stages.sweep.report import write_report

    write_report(config, runs, state.steps, root / "report")
    logger.info("sweep %r done: %s", config.name, root / "report" / "report.md")


def log_plan(config: SweepConfig, runs: list[Run], shared: Shared) -> None:
    logger.info(
        "sweep %r: %d runs (%s), %d preps, %d SFTs shared; %s launcher, %d at a time",
        config.name,
        len(runs),
        ", ".join(r.name for r in runs),
        len(shared.preps),
        len(shared.sfts),
        config.launcher,
        config.jobs,
    )


def echo_plan(config: SweepConfig, runs: list[Run]) -> None:
    """--dry-run: each run's data, SFT and RL folders."""
    for r in runs:
        sft = r.sft.folder if r.sft else f"none (RL from {config.base_model})"
        click.echo(f"{r.name}: data {r.data.folder}, SFT {sft}, RL {r.folder}")
    for name, data in eval_sets(config).items():
        click.echo(f"eval set {name}: {config.eval_sets[name]} -> data {data.folder}")


def prepare_compose(config: SweepConfig, root: Path, preps: list[Prefix]) -> None:
    """The folders the containers write into exist before they start, owned by the user they
    run as (exported for compose.yaml)."""
    for prep in preps:
        prep.folder.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    data_root = sweep_data_root(config)
    os.environ.update(container_user([root, data_root]))


def check_launcher(config: SweepConfig) -> None:
    """compose runs each stage in its container, which sees only ./data and ./checkpoints."""
    if config.launcher != "compose":
        return
    for field, folder, mount in (
        ("data_dir", config.data_dir, "data"),
        ("checkpoints_dir", config.checkpoints_dir, "checkpoints"),
    ):
        if folder.is_absolute() or folder.parts[:1] != (mount,):
            raise UserError(
                f"launcher=compose: {field} must be ./{mount} or a folder under it (the "
                f"containers mount only ./data and ./checkpoints), got {folder}"
            )
    for name, path in config.eval_sets.items():
        if path.is_absolute() or path.parts[:1] != ("data",):
            raise UserError(
                f"launcher=compose: eval set {name!r} ({path}) must be a file under ./data (the "
                "containers mount only ./data and ./checkpoints); copy it there"
            )
    compose_command()  # refuses here, before any work, when there is no compose


def compose_command() -> list[str]:
    """$COMPOSE if set (as scripts/smoke.sh), else `docker compose` (v2), else docker-compose;
    the Debian CLI in /usr/bin first (a newer one elsewhere may lack the compose plugin)."""
    if os.environ.get("COMPOSE"):
        return shlex.split(os.environ["COMPOSE"])
    path = f"/usr/bin:{os.environ.get('PATH', '')}"
    docker = shutil.which("docker", path=path)
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    v1 = shutil.which("docker-compose", path=path)
    if v1:
        return [v1]
    raise UserError("launcher=compose needs Docker with compose: run scripts/ensure-docker.sh")


def container_user(folders: list[Path]) -> dict[str, str]:
    """Who the containers run as: PROACTIVE_UID/GID, else the caller - but never root (the images
    refuse it), so a root caller hands the sweep's folders to uid 1000, as scripts/smoke.sh does."""
    uid = os.environ.get("PROACTIVE_UID") or str(os.getuid() or 1000)
    gid = os.environ.get("PROACTIVE_GID") or (uid if os.getuid() == 0 else str(os.getgid()))
    if os.getuid() == 0:
        for folder in folders:
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, int(uid), int(gid))
    return {"PROACTIVE_UID": uid, "PROACTIVE_GID": gid}


class Ledger:
    """sweep.json: the settings and, per finished step, when and how long. A step in it whose
    output is still there is not run again."""

    def __init__(self, path: Path, config: SweepConfig) -> None:
        self.path = path
        old = read_json(path) if path.is_file() else {}
        self.steps: dict[str, dict[str, Any]] = old.get("steps", {})
        self.config = config.model_dump(mode="json")
        self._lock = threading.Lock()  # runs finish from several threads
        self._save()

    def done(self, step: str) -> bool:
        return step in self.steps

    def finish(self, step: str, seconds: float) -> None:
        with self._lock:
            self.steps[step] = {"seconds": seconds, "finished_at": time.time()}
            self._save()

    def _save(self) -> None:
        write_json_atomic(self.path, {"config": self.config, "steps": self.steps})


def prep_step(config: SweepConfig, state: Ledger, prep: Prefix) -> None:
    # prep itself does nothing when its inputs are unchanged, so it always runs (seconds)
    prep.folder.mkdir(parents=True, exist_ok=True)
    args = ["--data-dir", str(prep.folder), *_sets(prep.overrides)]
    seconds = _launch(config, "prep", args, f"prep-{prep.key}")
    if not state.done(f"prep-{prep.key}"):  # keep the time of the run that built it
        state.finish(f"prep-{prep.key}", seconds)


def sft_step(config: SweepConfig, state: Ledger, sft: Prefix, data: Prefix) -> None:
    step = f"sft-{sft.key}"
    if not (state.done(step) and is_stable(RunPaths(sft.folder).eval_dir("report"))):
        dirs = ["--data-dir", str(data.folder), "--run-dir", str(sft.folder), "--resume"]
        seconds = _launch(config, "sft", [*dirs, *_sets(sft.overrides)], step)
        evals = [
            *cached(config),
            *config.settings.get("eval", []),
            "checkpoints=base,sft",
            "name=report",
        ]
        seconds += _launch(config, "eval", [*dirs, *_sets(evals)], f"{step}-eval")
        state.finish(step, seconds)


def last_epoch(sft_folder: Path) -> Path:
    epochs = published(RunPaths(sft_folder).sft, EPOCH_RE)
    if not epochs:
        raise UserError(f"{sft_folder} holds no published SFT epoch; see its log in logs/")
    return epochs[-1][1]


def rl_steps(config: SweepConfig, state: Ledger, run: Run, sets: dict[str, Prefix]) -> None:
    """A run's RL and its evaluation on the held-out split, then on every eval set; each
    finished part is kept (an eval set added later is all a rerun does)."""
    paths = RunPaths(run.folder)
    # a run without SFT has no SFT epoch to compare
    specs = [c for c in config.eval_checkpoints if run.sft or not c.startswith("sft")]
    checkpoints = f"checkpoints={json.dumps(specs)}"
    if state.done(run.name) and is_stable(paths.eval_dir("report")):
        logger.info("%s: done earlier, kept", run.name)
    else:
        start = last_epoch(run.sft.folder) if run.sft else config.base_model
        dirs = ["--data-dir", str(run.data.folder), "--run-dir", str(run.folder), "--resume"]
        grpo = [*dirs, *_sets((f"init_model={start}", *run.overrides["grpo"]))]
        rollout = [*dirs, *_sets(run.overrides["rollout"])]
        with ThreadPoolExecutor(2) as pool:  # the two workers run side by side
            futures = [
                pool.submit(_launch, config, "grpo", grpo, f"{run.name}-grpo"),
                pool.submit(_launch, config, "rollout", rollout, f"{run.name}-rollout"),
            ]
            seconds = max(f.result() for f in futures)
        evals = [*cached(config), *run.overrides["eval"], checkpoints, "name=report"]
        seconds += _launch(config, "eval", [*dirs, *_sets(evals)], f"{run.name}-eval")
        state.finish(run.name, seconds)
    for name, data in sets.items():
        step = f"{run.name}-eval-{name}"
        if state.done(step) and is_stable(paths.eval_dir(name)):
            continue
        dirs = ["--data-dir", str(data.folder), "--run-dir", str(run.folder), "--resume"]
        evals = [*cached(config), *run.overrides["eval"], checkpoints, f"name={name}", "split=all"]
        state.finish(step, _launch(config, "eval", [*dirs, *_sets(evals)], step))


def cached(config: SweepConfig) -> list[str]:
    """Every evaluation of the sweep keeps its responses in one place, so each run grades the
    shared base model's and SFT epoch's responses with its own reward instead of sampling them
    again (a sample_cache in the sweep's eval settings, given after this, wins)."""
    return [f"sample_cache={sample_cache(config)}"]


def _sets(overrides: Iterable[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _launch(config: SweepConfig, stage: str, args: list[str], step: str) -> float:
    """Run one stage command to its end, its output in logs/<step>.log; its wall time."""
    if config.launcher == "compose":
        cmd = [*compose_command(), "run", "--rm", "--no-deps", "-T", stage, *args]
    else:
        cmd = [sys.executable, "-m", "proactive_rl.stages.cli", stage, *args]
    log = sweep_root(config) / "logs" / f"{step}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    logger.info("%s: %s", step, " ".join(shlex.quote(c) for c in cmd))
    started = time.perf_counter()
    # appended to: a resumed step keeps the log of the attempt it resumes
    with open(log, "a") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
        out.flush()
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise UserError(
            f"sweep step {step} failed (exit {code}) after {seconds:.0f} s; its log {log} ends:\n"
            + "\n".join(f"    {line}" for line in tail)
            + "\nFix it and run the same command again: finished steps are kept."
        )
    logger.info("%s: done in %.0f s", step, seconds)
    return seconds


def _each(jobs: int, tasks: list[Callable[[], None]]) -> None:
    """Run the tasks, `jobs` at a time; after all have ended, raise the first error."""
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(task) for task in tasks]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def _unique(prefixes: Iterable[Prefix]) -> list[Prefix]:
    seen: dict[str, Prefix] = {}
    for prefix in prefixes:
        seen.setdefault(prefix.key, prefix)
    return list(seen.values())

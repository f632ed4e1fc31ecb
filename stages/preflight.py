"""proactive preflight: every stage's settings checked before any stage runs.

A bad knob (RL_BETA=-1, RL_ROLLOUTS=1, RL_EPOCHS=0), a missing model folder or a run directory
that would be refused otherwise stops the pipeline only when its stage starts, after prep and
the whole SFT (hours on the 8B recipe). compose and the JobSet run this first, with every
stage's arguments, and start the chain only when it passes:

    proactive preflight prep --data-dir data ::: sft --run-dir checkpoints/x --set epochs=2 \\
        ::: rollout --run-dir checkpoints/x --set reward_kwargs.beta=0.5 ::: grpo ... ::: eval ...

Each segment (separated by a lone `:::`) is a stage name and exactly the arguments that stage's
container gets. Its config is resolved by the stage's own code (its click options, the recipe
in PROACTIVE_RECIPE, PROACTIVE_SEED, --config, --set and veRL's keys: the stage's `resolve`),
then what can be checked before prep runs is: prep's input files, the base and judge model
folders, the reward and its arguments, and whether the stage would refuse its run directory
(PROACTIVE_LAUNCH_ID honoured); once for the container, the GPU check. Nothing prep or training
creates is required, and nothing is written.

Not a stage: like cli.py, it is the one other place that knows every stage, and it calls only
their `resolve` and `outputs` (and prep's `find_inputs`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from proactive_rl.shared.errors import UserError

SEPARATOR = ":::"
STAGES = ("prep", "sft", "rollout", "grpo", "eval")

Check = Callable[[], object]  # raises UserError for a problem; what it returns is unused


@dataclass
class Resolved:
    """One segment's config, its checks, and the words of its ok line."""

    summary: str
    checks: list[Check] = field(default_factory=list)


@dataclass
class Report:
    """What preflight found for one segment (stage "preflight": the container's own checks)."""

    stage: str
    problems: list[str] = field(default_factory=list)
    summary: str = ""


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    help="Check every stage's settings before any stage runs: SEGMENTS are stage names, each "
    "followed by exactly the arguments that stage's container gets, separated by a lone ':::' "
    "(prep --data-dir data ::: sft --run-dir checkpoints/x --set epochs=2 ::: rollout ... ::: "
    "grpo ... ::: eval ...). Resolves each stage's config as the stage does (recipe, seed, "
    "--config, --set, veRL keys) and checks prep's inputs, model folders, the reward, the run "
    "directory's claims (PROACTIVE_LAUNCH_ID) and the GPUs (PROACTIVE_GPUS, PROACTIVE_FLAVOR). "
    "Prints `error: <stage>: ...` per problem and exits 2, or one ok line per stage. Writes "
    "nothing.",
)
@click.argument("segments", nargs=-1, type=click.UNPROCESSED)
def command(segments: tuple[str, ...]) -> None:
    reports = run(list(segments))
    problems = [(r.stage, p) for r in reports for p in r.problems]
    for report in reports:
        if not report.problems and report.stage != "preflight":
            click.echo(f"preflight: {report.stage} ok ({report.summary})")
    for stage, problem in problems:
        click.echo(f"error: {stage}: {problem}", err=True)
    if problems:
        raise click.exceptions.Exit(2)


def run(args: list[str]) -> list[Report]:
    """Every segment's report, then the container's own (the GPU check)."""
    sys.dont_write_bytecode = True  # a reward file is imported: leave no __pycache__ behind
    reports = [check_segment(segment) for segment in split_segments(args)]
    reports.append(container_report())
    return reports


def split_segments(args: list[str]) -> list[list[str]]:
    """The segments between lone ':::' arguments, each a stage name and its arguments.

    >>> split_segments(["prep", ":::", "sft", "--set", "epochs=2"])
    [['prep'], ['sft', '--set', 'epochs=2']]
    """
    segments: list[list[str]] = [[]]
    for arg in args:
        if arg == SEPARATOR:
            segments.append([])
        else:
            segments[-1].append(arg)
    if segments == [[]]:
        raise UserError(f"preflight: give the stages to check, e.g. prep ... {SEPARATOR} sft ...")
    if any(not segment for segment in segments):
        raise UserError(f"preflight: an empty segment (two {SEPARATOR} in a row, or one at an end)")
    return segments


def check_segment(segment: list[str]) -> Report:
    """Parse one segment as its stage does, resolve its config, and run its checks."""
    stage, args = segment[0], segment[1:]
    report = Report(stage)
    if stage not in RESOLVERS:
        report.problems.append(f"not a stage; the stages are {', '.join(STAGES)}")
        return report
    try:
        resolved = RESOLVERS[stage](args)
    except UserError as err:
        report.problems.append(one_line(str(err)))
        return report
    report.summary = resolved.summary
    # "sft: the run directory already holds ...": the line names the stage already
    report.problems.extend(p.removeprefix(f"{stage}: ") for p in problems_of(resolved.checks))
    return report


def container_report() -> Report:
    from proactive_rl.engine.gpus import check_gpus

    return Report("preflight", list(problems_of([check_gpus])))


def problems_of(checks: list[Check]) -> Iterator[str]:
    """Every check's problem, not only the first one's."""
    for check in checks:
        try:
            check()
        except UserError as err:
            yield one_line(str(err))


def one_line(message: str) -> str:
    """A problem as one line of the report: a config error's indented details joined to its
    head, its list of valid keys kept only when a key was unknown (where it is the answer).

    >>> one_line("invalid GrpoConfig:\\n  n: should be >= 2 (got 1)\\nvalid keys: n, epochs")
    'invalid GrpoConfig: n: should be >= 2 (got 1)'
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not any(line.startswith("unknown key") for line in lines):
        lines = [line for line in lines if not line.startswith("valid keys:")]
    head, *rest = lines or [""]
    return " ".join([head, "; ".join(rest)]) if rest else head


def parse(command: click.Command, stage: str, args: list[str]) -> dict[str, Any]:
    """The stage command's parameters from its arguments, as the stage itself parses them
    (options, defaults and environment variables such as PROACTIVE_RECIPE)."""
    try:
        with command.make_context(f"proactive {stage}", list(args)) as ctx:
            return dict(ctx.params)
    except click.exceptions.Exit:
        raise UserError("--help is not a stage argument") from None
    except click.ClickException as err:
        raise UserError(err.format_message()) from None


def would_claim(paths: Any, name: str, outputs: list[Path], params: dict[str, Any]) -> Check:
    """The stage's claim of its outputs: refused as the stage would refuse it, unless this is a
    restart of the launch that claimed them (the stage then continues them)."""
    from proactive_rl.shared.claims import check_claim, continues_launch

    def check() -> None:
        if not continues_launch(paths.launch(name)):
            check_claim(outputs, name, params["resume"], params["clean"])

    return check


def reward_check(config: Any) -> Check:
    from proactive_rl.shared.rewards import load_reward

    return lambda: load_reward(config.reward, config.reward_kwargs)


def model_check(spec: str) -> Check:
    from proactive_rl.engine.models import check_base_model

    return lambda: check_base_model(spec)


def resolve_prep(args: list[str]) -> Resolved:
    from proactive_rl.shared.paths import DataPaths
    from proactive_rl.stages.prep.main import command, find_inputs, resolve

    params = parse(command, "prep", args)
    config = resolve(params["recipe"], params["config_file"], params["overrides"])
    data = DataPaths(params["data_dir"])
    return Resolved(f"data {data.root}", [lambda: find_inputs(config, data)])


def resolve_sft(args: list[str]) -> Resolved:
    from proactive_rl.shared.paths import RunPaths
    from proactive_rl.stages.sft.main import command, outputs, resolve

    params = parse(command, "sft", args)
    config = resolve(params["recipe"], params["config_file"], params["overrides"])
    paths = RunPaths(params["run_dir"])
    return Resolved(
        f"base_model {config.base_model}, {config.epochs} epochs",
        [model_check(config.base_model), would_claim(paths, "sft", outputs(paths), params)],
    )


def resolve_rollout(args: list[str]) -> Resolved:
    from proactive_rl.shared.paths import RunPaths, rollout_worker_name
    from proactive_rl.stages.rollout.main import command, outputs, resolve

    params = parse(command, "rollout", args)
    config = resolve(params["recipe"], params["config_file"], params["overrides"])
    paths = RunPaths(params["run_dir"])
    name = rollout_worker_name(config.worker)
    return Resolved(
        f"worker {config.worker}, reward {config.reward} {config.reward_kwargs}",
        [reward_check(config), would_claim(paths, name, outputs(config, paths), params)],
    )


def resolve_grpo(args: list[str]) -> Resolved:
    from proactive_rl.shared.paths import RunPaths
    from proactive_rl.stages.grpo.main import command, outputs, resolve

    params = parse(command, "grpo", args)
    config = resolve(params["recipe"], params["config_file"], params["overrides"])
    paths = RunPaths(params["run_dir"])
    checks = [would_claim(paths, "grpo", outputs(paths), params)]
    if config.init_model != "sft":  # "sft": the epochs the sft stage will publish
        checks.insert(0, model_check(config.init_model))
    return Resolved(
        f"init_model {config.init_model}, n={config.n}, {config.epochs} epochs, "
        f"{config.prompts_per_step} prompts a step",
        checks,
    )


def resolve_eval(args: list[str]) -> Resolved:
    from proactive_rl.shared.paths import RunPaths
    from proactive_rl.stages.eval.main import check_judge, command, outputs, resolve

    params = parse(command, "eval", args)
    config = resolve(
        params["run_dir"], params["recipe"], params["config_file"], params["overrides"]
    )
    paths = RunPaths(params["run_dir"])
    checks = [reward_check(config), would_claim(paths, "eval", outputs(config, paths), params)]
    if config.judge:
        checks.append(lambda: check_judge(config.judge))
    return Resolved(f"report {config.name}, reward {config.reward} {config.reward_kwargs}", checks)


RESOLVERS: dict[str, Callable[[list[str]], Resolved]] = {
    "prep": resolve_prep,
    "sft": resolve_sft,
    "rollout": resolve_rollout,
    "grpo": resolve_grpo,
    "eval": resolve_eval,
}

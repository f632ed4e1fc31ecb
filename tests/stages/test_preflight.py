"""`proactive preflight` through the real CLI: every stage's settings resolved as the stage
resolves them and checked before prep runs, every problem reported (`error: <stage>: ...`,
exit 2), nothing written, and nothing prep or training creates required."""

from __future__ import annotations

from pathlib import Path

import pytest

from proactive_rl.shared.claims import record_launch
from proactive_rl.shared.paths import RunPaths
from tests.conftest import proactive

RUN = ["--run-dir", "checkpoints/run"]


def segments(rollout: tuple[str, ...] = (), grpo: tuple[str, ...] = (), sft=()) -> list[str]:
    """The five stages as compose starts them (knobs expanded), extras appended."""
    return [
        *("prep", "--data-dir", "data", "--set", "num_sft_samples=8"),
        *(":::", "sft", *RUN, "--set", "epochs=2", *sft),
        *(":::", "rollout", *RUN, "--set", "reward_kwargs.beta=0.5", *rollout),
        *(":::", "grpo", *RUN, "--set", "n=4", "--set", "epochs=2", *grpo),
        *(":::", "eval", *RUN),
    ]


def preflight(workdir: Path, *args: str, env=None):
    return proactive("preflight", *args, cwd=workdir, check=False, env=env)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_good_settings_pass_before_prep_and_write_nothing(workdir):
    before = files(workdir)
    proc = preflight(workdir, *segments())
    assert proc.returncode == 0, proc.stderr
    ok = proc.stdout.splitlines()
    assert [line.split(" ok ")[0] for line in ok] == [
        f"preflight: {stage}" for stage in ("prep", "sft", "rollout", "grpo", "eval")
    ]
    assert "base_model builtin:tiny" in ok[1] and "beta': 0.5" in ok[2]
    assert files(workdir) == before  # no data/processed needed, none made, nothing written


@pytest.mark.parametrize(
    ("rollout", "grpo", "stage", "words"),
    [
        (("--set", "reward_kwargs.beta=-1"), (), "rollout", "reward_kwargs.beta"),  # RL_BETA=-1
        (("--set", "reward_kwargs.beta=high"), (), "rollout", "must be a number"),  # RL_BETA=high
        ((), ("--set", "n=0"), "grpo", "n: Input should be greater than or equal to 2"),
        ((), ("--set", "n=1"), "grpo", "n: Input should be greater than or equal to 2"),
        ((), ("--set", "epochs=0"), "grpo", "epochs: Input should be greater than or equal to 1"),
    ],
)
def test_each_bad_knob_is_a_clear_error_of_its_stage(workdir, rollout, grpo, stage, words):
    proc = preflight(workdir, *segments(rollout, grpo))
    assert proc.returncode == 2
    found = errors(proc.stderr)
    assert len(found) == 1 and found[0].startswith(f"error: {stage}: "), proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.count(" ok ") == 4  # the other stages passed


def test_every_problem_is_reported_not_only_the_first(workdir):
    proc = preflight(
        workdir,
        *segments(
            rollout=("--set", "reward_kwargs.beta=-1"),
            grpo=("--set", "epochs=0", "--set", "init_model=/no/such/model"),
            sft=("--set", "base_model=/no/such/model"),
        ),
        env={"PROACTIVE_GPUS": "2"},
    )
    assert proc.returncode == 2
    stages = [line.split(":")[1].strip() for line in errors(proc.stderr)]
    assert stages == ["sft", "rollout", "grpo", "preflight"], proc.stderr
    assert "Base model '/no/such/model' is not a local folder" in proc.stderr
    assert "expected 2 GPUs (PROACTIVE_GPUS=2)" in proc.stderr


def test_the_recipe_seed_and_verl_keys_are_resolved_as_the_stage_does(workdir):
    proc = preflight(
        workdir, "grpo", *RUN, "--set", "actor_rollout_ref.rollout.n=3", env={"PROACTIVE_SEED": "x"}
    )
    assert proc.returncode == 2 and "PROACTIVE_SEED='x' is not an integer" in proc.stderr
    proc = preflight(workdir, "grpo", *RUN, "--set", "actor_rollout_ref.rollout.n=3")
    assert proc.returncode == 0 and "n=3" in proc.stdout, proc.stderr
    proc = preflight(workdir, "sft", *RUN, env={"PROACTIVE_RECIPE": "no-such-recipe"})
    assert proc.returncode == 2 and "unknown recipe 'no-such-recipe'" in proc.stderr


def used_run(workdir: Path) -> RunPaths:
    """A run directory whose sft outputs an earlier launch left."""
    paths = RunPaths(workdir / "checkpoints" / "run")
    (paths.logs("sft")).mkdir(parents=True)
    (paths.logs("sft") / "metrics.jsonl").write_text("{}\n")
    return paths


def test_a_run_directory_the_stage_would_refuse_is_reported(workdir):
    used_run(workdir)
    proc = preflight(workdir, "sft", *RUN)
    assert proc.returncode == 2 and "error: sft: the run directory already holds" in proc.stderr
    for mode in ("--resume", "--clean"):
        assert preflight(workdir, "sft", *RUN, mode).returncode == 0


def test_a_restart_of_the_claiming_launch_passes(workdir, monkeypatch):
    paths = used_run(workdir)
    monkeypatch.setenv("PROACTIVE_LAUNCH_ID", "uid-1")
    record_launch(paths.launch("sft"))
    assert preflight(workdir, "sft", *RUN, env={"PROACTIVE_LAUNCH_ID": "uid-1"}).returncode == 0
    other = preflight(workdir, "sft", *RUN, env={"PROACTIVE_LAUNCH_ID": "uid-2"})
    assert other.returncode == 2 and "already holds outputs" in other.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "give the stages to check"),
        (("sft", *RUN, ":::"), "an empty segment"),
        (("train", "--set", "x=1"), "error: train: not a stage"),
        (("sft", "--no-such-option"), "error: sft: No such option"),
        (("prep", "--set", "rl_source=missing.jsonl"), "error: prep: input file"),
    ],
)
def test_malformed_segments_are_user_errors(workdir, args, words):
    proc = preflight(workdir, *args)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr

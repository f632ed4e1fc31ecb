"""make bench: the speed figures of this machine, measured, printed and written down.

1. The reward: the group-aware proactive reward (tag parsing + SimpleQA-style grading + group
   accuracy) on groups of n responses for the bundled sample questions; responses/s.
2. The pipeline: scripts/gpu_check.py (prep, SFT, GRPO beside the rollout worker) on this
   machine's device: rollout tokens/s, update tokens/s, MFU on a GPU, the seconds to publish a
   policy and to load it. On a machine without a GPU the tiny model on the CPU (`--allow-cpu`):
   plumbing-sized figures, comparable only between runs on the same kind of machine.
3. The generation engine (scripts/bench_engines.py), as ratios measured in this run on
   SmolLM2-135M: vLLM / transformers tokens/s; a policy handoff (publish + in-place reload) /
   a raw copy of its bytes. (The overlap of rollout and update, on- and off-policy, is
   `make bench-peers`'s: it runs both beside TRL on one job.)

Figures go to <out>/bench.json and, as every number a user sees, to tensorboard and
<out>/logs/bench/metrics.jsonl. Speed targets live here, not in timed tests.

Usage: python scripts/bench.py [--out checkpoints/bench] [--groups 2000] [--n 16]
       [--steps 3] [--model builtin:smollm2] [--quick]
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.rollout.config import RolloutConfig

REPO = Path(__file__).resolve().parents[1]
# The pipeline's group size and reward settings: their owners' defaults (config modules are light).
GROUP_SIZE = GrpoConfig.model_fields["n"].default


def synthetic_group(truth: str, n: int, rng: random.Random) -> list[str]:
    """n responses in the trained format: right, wrong, hedged, and malformed ones."""
    kinds = [
        f"<think>Recalling the fact.</think> {truth}",
        "<think>Let me think.</think> something else entirely",
        "<think>Not sure.</think><proactive>I am not certain of this.</proactive> maybe " + truth,
        f"{truth}",
        "<think>unclosed think block and no answer",
    ]
    return [rng.choice(kinds) for _ in range(n)]


def bench_reward(groups: int, n: int) -> dict[str, float]:
    from proactive_rl.shared.rewards import load_reward, score_group

    rows = [json.loads(x) for x in (REPO / "data/sample/rl.jsonl").read_text().splitlines()]
    rng = random.Random(0)
    work = []
    for i in range(groups):
        row = rows[i % len(rows)]
        truth = str(row["answer"]["value"])
        question = row["messages"][0]["content"]
        work.append((question, synthetic_group(truth, n, rng), truth))
    kwargs = RolloutConfig().reward_kwargs  # the pipeline's (RL_BETA's beta)
    reward = load_reward("proactive", kwargs)
    start = time.perf_counter()
    total = 0.0
    for question, responses, truth in work:
        total += sum(score_group(reward, question, responses, truth, "sampleQA", {}, kwargs).scores)
    seconds = time.perf_counter() - start
    return {
        "reward/groups": groups,
        "reward/n": n,
        "reward/responses_per_s": round(groups * n / seconds, 1),
        "reward/groups_per_s": round(groups / seconds, 1),
        "reward/mean_score": round(total / (groups * n), 4),  # a check that it graded
    }


def bench_pipeline(out: Path, steps: int, quick: bool) -> dict[str, object]:
    # --allow-cpu: the tiny model on the CPU where there is no GPU; a GPU is used when present
    args = [sys.executable, str(REPO / "scripts/gpu_check.py"), "--workdir", str(out)]
    args += ["--steps", str(steps), "--allow-cpu"]
    if quick:
        args += ["--prompts", "4", "--n", "4"]
    proc = subprocess.run(args, cwd=REPO)
    if proc.returncode != 0:
        raise click.ClickException(f"the pipeline run exited {proc.returncode} (log above)")
    figures = json.loads((out / "gpu_check.json").read_text())
    return {f"pipeline/{k}": v for k, v in figures.items() if k != "problems"}


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--out", type=click.Path(path_type=Path), default=Path("checkpoints/bench"))
@click.option("--groups", default=2000, show_default=True, help="Reward: groups scored.")
@click.option(
    "--n", default=GROUP_SIZE, show_default=True, help="Reward: responses per group (grpo's n)."
)
@click.option("--steps", default=3, show_default=True, help="Pipeline: GRPO steps.")
@click.option(
    "--model",
    default="builtin:smollm2",
    show_default=True,
    help="Engines: the model (builtin:tiny, builtin:smollm2 or a folder).",
)
@click.option("--quick", is_flag=True, help="Small settings (the test of this script).")
def main(
    out: Path, groups: int, n: int, steps: int, model: str, quick: bool
) -> None:  # fmt: skip
    from bench_engines import bench_generate_and_handoff

    from proactive_rl.engine.models import resolve_base_model
    from proactive_rl.shared.metrics import MetricsLogger

    shutil.rmtree(out / "engines", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {"date": time.strftime("%Y-%m-%d %H:%M")}
    click.echo(f"bench: reward, {groups} groups x n={n}")
    figures.update(bench_reward(groups, n))
    click.echo("bench: pipeline (scripts/gpu_check.py)")
    figures.update(bench_pipeline(out / "pipeline", steps, quick))
    model_dir = resolve_base_model(model, out / "base_models")
    figures["engines/model"] = model
    prompts, samples, tokens = (2, 2, 8) if quick else (8, 4, 64)
    click.echo(f"bench: generate and handoff, {model}, {prompts} prompts x n={samples}")
    figures.update(bench_generate_and_handoff(model_dir, out / "engines", prompts, samples, tokens))
    (out / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    metrics = MetricsLogger(out / "logs" / "bench")
    numbers = {k: v for k, v in figures.items() if isinstance(v, int | float)}
    metrics.log(0, {k: v for k, v in numbers.items() if not isinstance(v, bool)})
    metrics.close()
    width = max(map(len, figures))
    for key, value in figures.items():
        click.echo(f"  {key:<{width}}  {value}")
    click.echo(f"bench: figures in {out / 'bench.json'} (and {out / 'logs' / 'bench'})")


if __name__ == "__main__":
    main()

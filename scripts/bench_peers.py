"""make bench-peers: the same GRPO job run by TRL's GRPOTrainer (the release in our lock) and by
our pipeline (grpo beside a vLLM rollout worker), side by side on one machine.

Both get the same model, questions (the first prompts x steps rows of prep's rl_train.parquet,
in our plan's seeded order), group size n, prompts per step, response length, learning rate,
sampling (temperature 1, no top-p/top-k), KL (k3 at 0.001, veRL's low_var_kl), clip 0.2,
token-mean loss, one update per generation, and reward (our `proactive` through TRL's
reward-function interface, scored per group of n as our rollout scores it). Ours runs at
max_staleness 0 (on-policy, as TRL; grpo and the rollout take turns, each on every core, vLLM
reserving none) and 1 (generation beside the update, each pinned to a core of its own).
Per step: wall time, generated and trained tokens/s, peak memory (the resident set of every
process of the run, summed), reward. Step 0 is left out of the means (engine start, warm-up).
For ours also the overlap of generation and update (`make bench` measured it before): one step
off-policy, step time / max(generate, update), 1.0 when the shorter hides whole behind the
longer; on-policy, step time / (generate + update).

The figure: our steps per hour / TRL's. It compares only when both did the same work:
generated and trained tokens per step, over all repeats, within --same-work of TRL's (the two
engines sample differently, so one draw's lengths differ; a response cut at the limit is the
same work). Each repeat has a seed of its own, on both sides alike (prompt order, sampling,
trainer): one draw's luck averages out over the repeats, a systematic difference does not. The
table gives the pooled token ratios and marks a run that did not do the same work ("NO").

Usage: python scripts/bench_peers.py [--out checkpoints/bench-peers] [--steps 4] [--quick]
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engines import REPO, prepared_data, start_rl  # noqa: E402

RUNS = ("trl", "ours-staleness0", "ours-staleness1")
# TRL's generation paths (GRPOConfig settings): generate (its default), transformers' continuous
# batching, and vLLM colocated in the trainer's process (TRL's vLLM path is written for GPUs).
TRL_ENGINES: dict[str, dict] = {
    "generate": {},
    "continuous-batching": {"use_transformers_continuous_batching": True},
    "vllm": {"use_vllm": True, "vllm_mode": "colocate"},
}


class PeakMemory:
    """Samples the summed RSS of processes (and their children) every 0.2 s in a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak, self._stop = pids, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            total = 0
            for pid in self.pids:
                try:
                    proc = psutil.Process(pid)
                    for p in [proc, *proc.children(recursive=True)]:
                        total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak / 2**30, 2)


def settings_of(
    prompts: int, n: int, steps: int, tokens: int, lr: float, trl_engine: str, seed: int,
    trl_memory: str = "glibc",
) -> dict[str, object]:  # fmt: skip
    return {
        "seed": seed,
        "prompts": prompts,
        "n": n,
        "steps": steps,
        "max_new_tokens": tokens,
        "lr": lr,
        "trl_engine": trl_engine,
        "trl_memory": trl_memory,
    }


# ---------------------------------------------------------------- TRL, in a process of its own
def trl_reward(n: int, reward: str, kwargs: dict):
    """Our group reward through TRL's interface: TRL passes a generation batch whose n
    completions of one prompt are consecutive (its RepeatSampler); each group is scored
    together, as our rollout scores it."""
    from proactive_rl.shared.rewards import load_reward, score_group

    fn = load_reward(reward, kwargs)

    def proactive(prompts, completions, ground_truth, data_source, **_) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        scores: list[float] = []
        for start in range(0, len(texts), n):
            if len({json.dumps(p) for p in prompts[start : start + n]}) != 1:
                raise RuntimeError("TRL's batch does not hold whole groups in order")
            group = texts[start : start + n]
            truth, source = ground_truth[start], data_source[start]
            scores += score_group(fn, "", group, truth, source, {}, kwargs).scores
        return scores

    return proactive


@click.command("trl")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True)
@click.option("--data", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--settings", "settings_json", required=True)
def trl_main(model_dir: Path, data: Path, out: Path, settings_json: str) -> None:
    """One TRL GRPOTrainer run; writes steps.jsonl (one line per optimizer step)."""
    import datasets
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from proactive_rl.engine.host_memory import keep_freed_memory
    from proactive_rl.engine.precision import training_dtype
    from proactive_rl.shared.schedule import Plan
    from proactive_rl.stages.grpo.config import GrpoConfig
    from proactive_rl.stages.rollout.config import RolloutConfig

    s = json.loads(settings_json)
    if s.get("trl_memory") == "kept":  # what grpo and the rollout do on a CPU (--trl-memory)
        keep_freed_memory()
    ours, rollout = GrpoConfig(), RolloutConfig()
    rows = pq.read_table(data / "processed" / "rl_train.parquet").to_pylist()
    # our grpo's order of the same pool (max_prompts = prompts x steps, one epoch), step by step
    plan = Plan("peers", len(rows), "", s["prompts"], s["n"], 1, s["seed"], 0)
    plan = dataclasses.replace(plan, max_prompts=s["prompts"] * s["steps"])
    rows = [rows[i] for step in range(plan.total_steps) for i in plan.step_prompts(step)]
    dataset = datasets.Dataset.from_list(
        [
            {
                "prompt": r["prompt"],
                "ground_truth": r["reward_model"]["ground_truth"],
                "data_source": r["data_source"],
            }
            for r in rows
        ]
    )
    completions = s["prompts"] * s["n"]
    micro = min(ours.micro_batch_size, completions)
    config = GRPOConfig(
        output_dir=str(out / "trainer"),
        max_steps=s["steps"],
        learning_rate=s["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=ours.weight_decay,
        adam_beta1=ours.betas[0],
        adam_beta2=ours.betas[1],
        max_grad_norm=ours.grad_clip,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=completions // micro,  # one optimizer step per generation
        num_generations=s["n"],
        max_completion_length=s["max_new_tokens"],
        temperature=rollout.sampling.temperature,
        top_p=1.0,
        top_k=0,
        beta=ours.loss.kl_coef,
        epsilon=ours.loss.clip_eps_low,
        epsilon_high=ours.loss.clip_eps_high,
        loss_type="dapo",  # token-mean over the step's tokens: our (and veRL's) token-mean
        scale_rewards="group",
        num_iterations=ours.ppo_epochs,
        shuffle_dataset=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        # the precision our grpo trains in (precision=auto: bf16 on a GPU that has it and on
        # a CPU with AMX, else fp32); TRL's default bf16=True autocasts on any CPU, which on
        # one without AMX is slow (on an AVX2 CPU: 356 s a step against 35)
        bf16=training_dtype("auto") == torch.bfloat16,
        seed=s["seed"],
        dataloader_num_workers=0,
        disable_dropout=True,
        **TRL_ENGINES[s["trl_engine"]],
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reward = trl_reward(s["n"], rollout.reward, rollout.reward_kwargs)
    out.mkdir(parents=True, exist_ok=True)
    lines = (out / "steps.jsonl").open("w")

    generating: list[float] = []  # seconds of TRL's generate calls since the last step's line

    class Steps(TrainerCallback):
        last_tokens = 0

        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.seconds = time.perf_counter() - self.start

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "reward" not in logs:
                return
            tokens = state.num_input_tokens_seen - self.last_tokens
            self.last_tokens = state.num_input_tokens_seen
            generated = logs["completions/mean_length"] * completions
            generate_s = sum(generating)
            generating.clear()
            record = {
                "step": state.global_step - 1,
                "seconds": self.seconds,
                "generated_tokens": generated,
                "trained_tokens": tokens,
                "reward": logs["reward"],
                # where TRL's step goes: its generation, and the rest (scoring, the reference
                # and old-logprob forwards, the update)
                "generate_s": generate_s,
                "update_s": self.seconds - generate_s,
            }
            lines.write(json.dumps(record) + "\n")
            lines.flush()

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Steps()],
    )
    generate = trainer._generate  # TRL's generation of a step's completions, whatever engine

    def timed_generate(*args, **kwargs):
        start = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            generating.append(time.perf_counter() - start)

    trainer._generate = timed_generate
    trainer.train()
    lines.close()


def run_trl(model_dir: Path, data: Path, out: Path, settings: dict) -> float:
    """TRL's run in a fresh interpreter (its memory its own); returns its peak memory, GB."""
    cmd = [sys.executable, __file__, "trl", "--model", str(model_dir), "--data", str(data)]
    cmd += ["--out", str(out), "--settings", json.dumps(settings)]
    log = (out.parent / f"{out.name}.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    memory = PeakMemory([proc.pid])
    code = proc.wait()
    peak = memory.stop()
    if code != 0:
        raise click.ClickException(f"the TRL run exited {code}: see {log.name}")
    return peak


# ---------------------------------------------------------------- ours
def run_ours(model_dir: Path, data: Path, out: Path, settings: dict, staleness: int) -> float:
    """grpo beside a vLLM rollout worker; writes steps.jsonl from its metrics and rollouts."""
    import pyarrow.parquet as pq

    from proactive_rl.shared.paths import RunPaths

    s = settings
    grpo_args = [
        f"n={s['n']}",
        f"prompts_per_step={s['prompts']}",
        f"mini_batch_prompts={s['prompts']}",
        f"max_prompts={s['prompts'] * s['steps']}",
        "epochs=1",
        f"learning_rate={s['lr']}",
        f"max_staleness={staleness}",
        "keep_policies=2",
        f"state_every_steps={s['steps']}",
        f"seed={s['seed']}",
        *([f"loss.kl_coef={s['kl_coef']}"] if "kl_coef" in s else []),
    ]
    rollout_args = [f"sampling.max_new_tokens={s['max_new_tokens']}", f"seed={s['seed']}"]
    if s.get("ignore_eos"):
        rollout_args.append("sampling.ignore_eos=true")
    # one step off-policy, generation and update run at once: each on a core of its own;
    # on-policy they take turns, so each computes on every core (vLLM reserving none)
    pinned = staleness > 0
    if not pinned:
        rollout_args.append("vllm.cpu_reserved_cores=0")
    grpo, rollout = start_rl(
        model_dir,
        data,
        out,
        [a for arg in grpo_args for a in ("--set", arg)],
        [a for arg in rollout_args for a in ("--set", arg)],
        pinned=pinned,
    )
    memory = PeakMemory([grpo.pid, rollout.pid])
    codes = rollout.wait(), grpo.wait()
    peak = memory.stop()
    if codes != (0, 0):
        raise click.ClickException(f"our run exited {codes} (rollout, grpo): see {out}/logs")
    paths = RunPaths(out)
    metrics = [json.loads(x) for x in (out / "logs/grpo/metrics.jsonl").read_text().splitlines()]
    with (out / "steps.jsonl").open("w") as lines:
        for m in metrics:
            table = pq.read_table(
                paths.rollout_file(m["step"]), columns=["prompt_ids", "response_ids"]
            )
            prompt = sum(len(x) for x in table.column("prompt_ids").to_pylist())
            generated = sum(len(x) for x in table.column("response_ids").to_pylist())
            # the trainer's own step (a policy written in the background is not on it) without
            # saving the optimizer state for --resume (at the last step): TRL saves nothing
            # (save_strategy="no")
            trainer_s = m["time/update_s"] + m["time/publish_wait_s"] - m["time/save_state_s"]
            record = {
                "step": m["step"],
                "seconds": m["time/wait_s"] + trainer_s,
                "generated_tokens": generated,
                "trained_tokens": prompt + generated,
                "reward": m["reward/mean"],
                # the overlap's parts: generation (with the policy reload) and the update
                # (with what publishing held the trainer up), each as its own worker timed it
                "generate_s": m["time/generate_s"] + m["time/policy_load_s"],
                "update_s": trainer_s,
            }
            lines.write(json.dumps(record) + "\n")
    return peak


# ---------------------------------------------------------------- the comparison
def summary(steps: list[dict], peak_gb: float, staleness: int | None) -> dict[str, float]:
    """A run's means over its steps after step 0 (engine start-up and warm-up left out), with
    the step's generation and the rest (generate_s, update_s; for TRL its generate calls and
    everything else); for ours, the overlap ratio: one step off-policy, step time /
    max(generate, update) (1.0: the shorter one is hidden whole); on-policy, step time /
    (generate + update) (about 1.0)."""
    later = [r for r in steps if r["step"] > 0] or steps
    mean = lambda key: statistics.fmean(r[key] for r in later)  # noqa: E731
    step_s = mean("seconds")
    overlap = {}
    if "generate_s" in later[0]:
        generate, update = mean("generate_s"), mean("update_s")
        overlap = {"generate_s": round(generate, 2), "update_s": round(update, 2)}
        if staleness is not None:
            bound = max(generate, update) if staleness else generate + update
            overlap["overlap_ratio"] = round(step_s / bound, 3)
    return {
        "steps": len(steps),
        "step_s": round(step_s, 2),
        "steps_per_hour": round(3600 / step_s, 1),
        "generated_tokens_per_step": round(mean("generated_tokens"), 1),
        "trained_tokens_per_step": round(mean("trained_tokens"), 1),
        "generated_tokens_per_s": round(mean("generated_tokens") / step_s, 1),
        "trained_tokens_per_s": round(mean("trained_tokens") / step_s, 1),
        "peak_memory_gb": peak_gb,
        "reward_first": round(steps[0]["reward"], 3),
        "reward_last": round(steps[-1]["reward"], 3),
        **overlap,
    }


WORK = ("generated_tokens_per_step", "trained_tokens_per_step")


def compare(repeats: list[dict[str, dict]], tolerance: float) -> dict[str, dict]:
    """Per run of ours, over the repeats: the same-work check against TRL, then the
    steps-per-hour ratio (median, min, max). Each repeat samples with a seed of its own (both
    sides alike), so one repeat's token counts differ by the luck of its draw; the check is on
    the mean over all repeats, where that luck averages out and a systematic difference (one
    side generating longer answers) does not. Each repeat's ratios are kept beside it."""
    out: dict[str, dict] = {}
    for name in repeats[0]:
        if name == "trl":
            continue
        works = [{key: round(r[name][key] / r["trl"][key], 3) for key in WORK} for r in repeats]
        pooled = {
            key: round(
                statistics.fmean(r[name][key] for r in repeats)
                / statistics.fmean(r["trl"][key] for r in repeats),
                3,
            )
            for key in WORK
        }
        ratios = [r[name]["steps_per_hour"] / r["trl"]["steps_per_hour"] for r in repeats]
        out[name] = {
            "same_work": all(abs(v - 1) <= tolerance for v in pooled.values()),
            "work_ratio": pooled,
            "work_ratios": works,
            "steps_per_hour_ratio": round(statistics.median(ratios), 2),
            "steps_per_hour_ratio_min": round(min(ratios), 2),
            "steps_per_hour_ratio_max": round(max(ratios), 2),
            "repeats": len(ratios),
        }
    return out


def medians(repeats: list[dict[str, dict]]) -> dict[str, dict]:
    """Each run's figures, the median over the repeats."""
    return {
        name: {key: statistics.median(r[name][key] for r in repeats) for key in repeats[0][name]}
        for name in repeats[0]
    }


def plot(out: Path, curves: dict[str, list[dict]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, steps in curves.items():
        left.plot([r["step"] for r in steps], [r["reward"] for r in steps], marker="o", label=name)
        right.plot(
            [r["step"] for r in steps], [r["seconds"] for r in steps], marker="o", label=name
        )
    left.set(title="reward per step", xlabel="step", ylabel="mean reward")
    right.set(title="wall time per step", xlabel="step", ylabel="seconds")
    left.legend()
    fig.tight_layout()
    path = out / "peers.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def table(runs: dict[str, dict], ratios: dict[str, dict]) -> str:
    keys = ["step_s", "generate_s", "update_s", "steps_per_hour", "generated_tokens_per_s"]
    keys += ["trained_tokens_per_s", "peak_memory_gb", "reward_first", "reward_last"]
    keys += ["overlap_ratio"]
    lines = ["| run | " + " | ".join(keys) + " | same work | steps/h vs TRL [min, max] |"]
    lines.append("|---" * (len(keys) + 3) + "|")
    for name, run in runs.items():
        cells = " | ".join(str(round(run[k], 2)) if k in run else "" for k in keys)
        if name == "trl":
            lines.append(f"| {name} | {cells} | | 1.00 |")
            continue
        r = ratios[name]
        work = ", ".join(f"{k.split('_')[0]} {v:.3f}" for k, v in r["work_ratio"].items())
        same = f"yes ({work})" if r["same_work"] else f"NO ({work})"
        spread = f"{r['steps_per_hour_ratio']:.2f} [{r['steps_per_hour_ratio_min']:.2f}, "
        spread += f"{r['steps_per_hour_ratio_max']:.2f}]"
        lines.append(f"| {name} | {cells} | {same} | {spread} |")
    return "\n".join(lines) + "\n"


def one_run(model_dir: Path, data: Path, folder: Path, settings: dict, name: str):
    """One run from scratch in `folder`: (its steps, its summary)."""
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    staleness = None if name == "trl" else int(name[-1])
    if staleness is None:
        peak = run_trl(model_dir, data, folder, settings)
    else:
        peak = run_ours(model_dir, data, folder, settings, staleness)
    steps = [json.loads(x) for x in (folder / "steps.jsonl").read_text().splitlines()]
    figures = summary(steps, peak, staleness)
    return steps, {**figures, "wall_s": round(time.perf_counter() - start)}


@click.command("bench-peers")
@click.option("--out", type=click.Path(path_type=Path), default=Path("checkpoints/bench-peers"))
@click.option("--model", default="builtin:smollm2", show_default=True)
@click.option("--steps", default=4, show_default=True, help="Optimizer steps of each run.")
@click.option("--prompts", default=4, show_default=True, help="Prompts per step.")
@click.option("--n", default=4, show_default=True, help="Responses per prompt (group size).")
@click.option("--max-new-tokens", default=64, show_default=True)
@click.option("--lr", default=1e-6, show_default=True, help="Learning rate (the recipe's).")
@click.option(
    "--trl-engine",
    type=click.Choice(list(TRL_ENGINES)),
    default="generate",
    show_default=True,
    help="TRL's generation path.",
)
@click.option(
    "--trl-memory",
    type=click.Choice(["glibc", "kept"]),
    default="glibc",
    show_default=True,
    help="TRL's host memory: glibc's default, as TRL runs, or kept for reuse as our stages "
    "keep it on a CPU (engine/host_memory.py): how much of the ratio is that setting.",
)
@click.option("--repeats", default=3, show_default=True, help="Each run this many times.")
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of repeat 1 (prompt order, sampling, trainer; both sides); repeat k uses seed"
    " + k - 1.  [default: grpo's seed]",
)
@click.option("--same-work", default=0.05, show_default=True, help="Token-count tolerance.")
@click.option("--runs", default=",".join(RUNS), show_default=True, help="Which runs, in order.")
@click.option("--quick", is_flag=True, help="The tiny model, 2 steps (the test of this script).")
def run_main(
    out: Path, model: str, steps: int, prompts: int, n: int, max_new_tokens: int, lr: float,
    trl_engine: str, trl_memory: str, repeats: int, seed: int | None, same_work: float, runs: str,
    quick: bool,
) -> None:  # fmt: skip
    """TRL's GRPOTrainer and our pipeline on the same job, each run --repeats times (in turn, so
    the machine's drift falls on all of them); writes peers.json/.md/.png in --out."""
    from proactive_rl.engine.models import resolve_base_model
    from proactive_rl.stages.grpo.config import GrpoConfig

    if quick:
        model, steps, prompts, n, max_new_tokens = "builtin:tiny", 2, 2, 2, 8
    names = [r.strip() for r in runs.split(",")]
    if "trl" not in names or not set(names) <= set(RUNS):
        raise click.BadParameter(f"a list of {', '.join(RUNS)}, trl included", param_hint="--runs")
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_base_model(model, out / "base_models")
    data = prepared_data(out)
    seed = GrpoConfig().seed if seed is None else seed
    settings = settings_of(prompts, n, steps, max_new_tokens, lr, trl_engine, seed, trl_memory)
    results: list[dict[str, dict]] = []
    curves: dict[str, list[dict]] = {}
    for repeat in range(repeats):
        results.append({})
        for name in names:
            click.echo(f"bench-peers: repeat {repeat + 1}/{repeats}: {name}, {steps} steps of "
                       f"{prompts} prompts x n={n}, {max_new_tokens} new tokens, "
                       f"seed {seed + repeat}")  # fmt: skip
            this = {**settings, "seed": seed + repeat}
            steps_of, results[-1][name] = one_run(model_dir, data, out / name, this, name)
            curves.setdefault(name, steps_of)  # the plot: the first repeat's curves
    ratios = compare(results, same_work)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": model, "cores": os.cpu_count()}
    report |= {"settings": settings, "runs": medians(results), "vs_trl": ratios}
    report["repeats"] = results
    (out / "peers.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "peers.md").write_text(table(report["runs"], ratios))
    click.echo(table(report["runs"], ratios))
    click.echo(f"bench-peers: {out / 'peers.json'}, {out / 'peers.md'}, {plot(out, curves)}")


if __name__ == "__main__":
    os.chdir(REPO)
    if sys.argv[1:2] == ["trl"]:  # the TRL run's own process (run_trl starts it)
        trl_main(sys.argv[2:])
    else:
        run_main()

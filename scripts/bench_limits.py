"""make bench-limits: how close generation and the update come to this machine's limits, and the
pipeline's two ratios beside them, measured in one run on one model (SmolLM2-135M by default).

1. The machine: memory bandwidth (a large tensor copied, bytes read + written) and the GEMM rate
   at the model's own shapes (every linear layer of one forward over a block of tokens, fp32),
   each on 1 thread, on all cores, and on all but the one vLLM reserves by default.
2. Generation: vLLM's tokens/s over a sweep of prompts per call x n, against a roofline from
   (1) at the threads the engine computes on. A call's roofline time is its prefill at the GEMM
   rate plus, for every decode step, the longer of reading the weights once (bandwidth) and the
   step's sequences' FLOPs (GEMM rate), with the batch shrinking as sequences end. The sweep
   runs for each way the engine may use the cores (vLLM's CPU build reserves one core for its
   scheduler by default: `reserved 0` gives the worker every core).
3. The update: model FLOPs utilisation of grpo's update, counted as gpu_check counts it (6N per
   trained token, 2N more per extra forward: old logprobs, the KL reference) against the GEMM
   rate on the one core the trainer gets, in the dtype it computes in (bf16 on a CPU with AMX,
   engine/precision.py), from a run of ours beside a vLLM rollout worker
   (make bench-peers' run, one step off-policy) sized so generation and update take about the
   same time: that run's overlap ratio, step / max(generate, update), is the balanced case.
   Which size balances depends on the machine (the update is 1x to 2.5x the generation at
   2 prompts x 2 on our 2-core kinds), so `--balanced auto` probes at 2 x 2 x 256 tokens and,
   while the two differ by more than BALANCE_TOLERANCE, runs again at the number of prompts
   that evens them, or at longer responses where one prompt is still too many (next_size).
   The balanced run trains without the KL term (no reference forward), on responses all as
   long as the run's new tokens (sampling.ignore_eos).
4. The handoff: publish + in-place reload / a raw copy of the same bytes (make bench's), on
   the engine of the generation sweep; and the same over a copy written into the pages of the
   copy before, as grpo's publish writes into those of the policy before (bench_engines.py).

Writes <out>/limits.json and limits.md. Usage:
    python scripts/bench_limits.py [--out checkpoints/bench-limits] [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engines import REPO, prepared_data  # noqa: E402

GRID = "4x1,8x1,8x4,16x4,32x4,16x8"
QUICK_GRID = "2x1,2x2"


# ---------------------------------------------------------------- the machine
def bandwidth_gbs(threads: int, mib: int = 512) -> float:
    """Best of 5 copies of a `mib` MiB float32 tensor: bytes read + written per second."""
    import torch

    torch.set_num_threads(threads)
    src = torch.rand(mib * 2**18)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def linear_shapes(config: dict) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of one forward: attention, MLP, the LM head."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    layer = [(hidden, heads * head_dim), (hidden, kv_heads * head_dim)]
    layer += [(hidden, kv_heads * head_dim), (heads * head_dim, hidden)]
    layer += [(hidden, inter), (hidden, inter), (inter, hidden)]
    return layer * config["num_hidden_layers"] + [(hidden, config["vocab_size"])]


def gemm_gflops(shapes: list[tuple[int, int]], tokens: int, threads: int, dtype=None) -> float:
    """GFLOP/s of the model's linear layers over `tokens` rows (best of 3 passes), in `dtype`
    (float32 by default)."""
    import torch

    torch.set_num_threads(threads)
    weights = {shape: torch.rand(shape, dtype=dtype) for shape in set(shapes)}
    inputs = {k: torch.rand(tokens, k, dtype=dtype) for k in {k for k, _ in shapes}}
    flops = sum(2 * tokens * k * n for k, n in shapes)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for shape in shapes:
            torch.mm(inputs[shape[0]], weights[shape])
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def machine(config: dict, quick: bool) -> dict[str, float | str]:
    shapes = linear_shapes(config)
    tokens = 64 if quick else 256
    out = {}
    cores = len(os.sched_getaffinity(0))
    # one core (the trainer's), all but the one vLLM reserves by default, all of them
    for threads in sorted({1, max(cores - 1, 1), cores}):
        out[f"bandwidth_gbs@{threads}"] = round(bandwidth_gbs(threads, 64 if quick else 512), 2)
        out[f"gemm_gflops@{threads}"] = round(gemm_gflops(shapes, tokens, threads), 1)
    # the update's own peak: grpo computes in bf16 on a CPU with AMX (engine/precision.py)
    from proactive_rl.engine.precision import training_dtype

    dtype = training_dtype("auto")
    out["update_dtype"] = str(dtype).removeprefix("torch.")
    out["update_gemm_gflops@1"] = round(gemm_gflops(shapes, tokens, 1, dtype), 1)
    return out


# ---------------------------------------------------------------- generation
def roofline_s(lengths: list[int], prompt_tokens: int, weight_bytes: int, flops_per_token: int,
               gbs: float, gflops: float) -> float:  # fmt: skip
    """The fastest a call could take: prefill at the GEMM rate, then per decode step the longer
    of one read of the weights and the live sequences' FLOPs."""
    seconds = prompt_tokens * flops_per_token / (gflops * 1e9)
    for step in range(max(lengths, default=0)):
        live = sum(1 for n in lengths if n > step)
        seconds += max(weight_bytes / (gbs * 1e9), live * flops_per_token / (gflops * 1e9))
    return seconds


def engine_main(model_dir: Path, grid: str, tokens: int, handoff_dir: str, reserved: str) -> None:
    """One engine reserving `reserved` cores ("default": vLLM's choice): prints its compute
    threads, then each prompts x n of the grid once after a warm-up, a JSON line per call
    (lengths, prompt tokens, seconds), then, given a folder, the handoff on the same engine."""
    from bench_engines import chat_prompts, handoff

    from proactive_rl.engine.generation import SamplingConfig, VllmBackend, VllmConfig

    questions = [json.loads(line)["messages"][0]["content"]
                 for line in (REPO / "data/sample/rl.jsonl").read_text().splitlines()]  # fmt: skip
    cores = None if reserved == "default" else int(reserved)
    engine = VllmBackend("auto", VllmConfig(cpu_reserved_cores=cores), 1024)
    engine.load(model_dir)
    print(json.dumps({"threads": engine.llm.collective_rpc("compute_threads")[0]}), flush=True)
    cells = [tuple(int(x) for x in cell.split("x")) for cell in grid.split(",")]
    ids = chat_prompts(model_dir, max(p for p, _ in cells), questions)
    engine.generate(ids[:1], 1, SamplingConfig(max_new_tokens=4), seed=0)
    for prompts, n in cells:
        start = time.perf_counter()
        groups = engine.generate(ids[:prompts], n, SamplingConfig(max_new_tokens=tokens), seed=1)
        seconds = time.perf_counter() - start
        lengths = [len(s.token_ids) for group in groups for s in group]
        prompt_tokens = sum(len(p) for p in ids[:prompts])
        print(json.dumps({"prompts": prompts, "n": n, "seconds": seconds, "lengths": lengths,
                          "prompt_tokens": prompt_tokens}), flush=True)  # fmt: skip
    if handoff_dir:
        print(json.dumps({"handoff": handoff(engine, model_dir, Path(handoff_dir))}), flush=True)
    engine.close()


def call_row(call: dict, reserved: str, threads: int, shape: dict, gbs: float, gflops: float):
    """One generate call's figures against its roofline."""
    generated = sum(call["lengths"])
    roof = roofline_s(call["lengths"], call["prompt_tokens"], shape["weight_bytes"],
                      shape["flops_per_token"], gbs, gflops)  # fmt: skip
    return {
        "reserved_cpus": reserved,
        "engine_threads": threads,
        "prompts_x_n": f"{call['prompts']}x{call['n']}",
        "tokens_per_s": round(generated / call["seconds"], 1),
        "roofline_tokens_per_s": round(generated / roof, 1),
        "fraction_of_roofline": round(roof / call["seconds"], 3),
    }


def generation(
    model_dir: Path, grid: str, tokens: int, limits: dict, shape: dict, work: Path,
    layouts: tuple[str, ...],
) -> tuple[list[dict], dict]:  # fmt: skip
    """The grid for each way the engine may use the cores (`layouts`: "default" and/or a number
    of reserved cores), each in an engine of its own, and the handoff on the first engine:
    (rows, handoff figures)."""
    rows, handoff = [], {}
    for reserved in layouts:
        handoff_dir = "" if handoff or rows else str(work / "handoff")
        cmd = [sys.executable, __file__, "engine", str(model_dir), grid, str(tokens), handoff_dir,
               reserved]  # fmt: skip
        log = work / f"engine-reserved-{reserved}.log"  # vLLM's own log, for a failed run
        with log.open("w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
            for line in proc.stdout:  # a line per call, as it ends
                if not line.startswith("{"):
                    continue
                call = json.loads(line)
                if "threads" in call:  # the roofline at the threads the engine computes on
                    threads = call["threads"]
                    gbs, gflops = (
                        limits[f"bandwidth_gbs@{threads}"],
                        limits[f"gemm_gflops@{threads}"],
                    )
                    continue
                if "handoff" in call:
                    handoff = call["handoff"]
                    continue
                rows.append(call_row(call, reserved, threads, shape, gbs, gflops))
                click.echo(f"  reserved {reserved}, {threads} thread(s), "
                           f"{rows[-1]['prompts_x_n']}: {rows[-1]['tokens_per_s']} tokens/s, "
                           f"{rows[-1]['fraction_of_roofline']:.0%} of the roofline")  # fmt: skip
        if proc.wait() != 0:
            tail = log.read_text()[-3000:]
            raise click.ClickException(f"the engine run ({reserved}) failed ({log}):\n{tail}")
    return rows, handoff


# ---------------------------------------------------------------- the update, balanced overlap
# The longer phase at most this many times the shorter counts as balanced; beyond it the overlap
# ratio says little (the shorter phase hides whole under the longer one: 1.00 by construction).
BALANCE_TOLERANCE = 1.25
# prompts, n, new tokens of --balanced auto's first run: at 128 tokens the update's cost a step
# that does not grow with the response (the optimizer step, the prompts) kept it 1.45x the
# generation even at 1 prompt x 2 on an EPYC (2026-12-05); at 256 it was 1.17x
PROBE = (2, 2, 256)
# runs of --balanced auto at most (the probe included): about 2 minutes each on an EPYC
BALANCE_TRIES = 3


def balancing_prompts(prompts: int, generate_s: float, update_s: float) -> int:
    """Prompts per step that bring the update level with the generation. The update's time
    grows with the sequences it trains; a decode-bound generation's barely grows at these small
    batches (one pass over the weights a token, whatever the batch), so the prompts scale by
    generate / update.

    >>> balancing_prompts(2, 4.7, 11.0), balancing_prompts(2, 9.0, 4.0), balancing_prompts(2, 5, 5)
    (1, 4, 2)
    """
    return max(1, round(prompts * generate_s / update_s))


def next_size(prompts: int, tokens: int, generate_s: float, update_s: float) -> tuple[int, int]:
    """Prompts and new tokens of the next try after an unbalanced run: the prompts that even
    the phases out; where rounding keeps them, one prompt more or less; where the update is
    still the longer at one prompt, responses twice as long. That evens them because the
    generation's time grows with the tokens at any batch, while a step of the update has a
    part that does not (writing the policy, the optimizer step: the update stayed 1.3x a
    6.8 s generation at 1 prompt x 2 x 256 tokens on an EPYC, 2026-12-05 13:06).

    >>> next_size(2, 256, 5.0, 11.0), next_size(2, 256, 5.0, 6.9), next_size(1, 256, 6.8, 8.9)
    ((1, 256), (1, 256), (1, 512))
    >>> next_size(2, 256, 7.0, 5.4)
    (3, 256)
    """
    even = balancing_prompts(prompts, generate_s, update_s)
    if even != prompts:
        return even, tokens
    if update_s < generate_s:
        return prompts + 1, tokens
    return (prompts - 1, tokens) if prompts > 1 else (prompts, 2 * tokens)


def is_balanced(run: dict) -> bool:
    longer, shorter = sorted((run["generate_s"], run["update_s"]), reverse=True)
    return longer <= BALANCE_TOLERANCE * shorter


def balanced_case(model_dir: Path, out: Path, spec: str, steps: int, params: int,
             gflops_1: float) -> dict:  # fmt: skip
    """The balanced run: at `spec` (prompts x n x tokens) as given, or (auto) from PROBE on,
    each unbalanced run followed by one at next_size's, up to BALANCE_TRIES runs; the last run,
    with the earlier ones kept beside it (`tries`)."""
    if spec != "auto":
        prompts, n, tokens = (int(x) for x in spec.split("x"))
        return balanced_run(model_dir, out, prompts, n, steps, tokens, params, gflops_1)
    prompts, n, tokens = PROBE
    tries: list[dict] = []
    while True:
        run = balanced_run(model_dir, out, prompts, n, steps, tokens, params, gflops_1)
        if run["balanced"] or len(tries) + 1 == BALANCE_TRIES:
            return {**run, "tries": tries} if tries else run
        tries.append(run)
        prompts, tokens = next_size(prompts, tokens, run["generate_s"], run["update_s"])
        click.echo(f"bench-limits: not balanced at {run['settings']} (generate "
                   f"{run['generate_s']} s, update {run['update_s']} s): again at {prompts} "
                   f"prompts x {tokens} tokens")  # fmt: skip


def balanced_run(model_dir: Path, out: Path, prompts: int, n: int, steps: int, tokens: int,
                 params: int, gflops_1: float) -> dict:  # fmt: skip
    """Ours one step off-policy (grpo on one core beside a vLLM rollout worker on the other):
    the overlap ratio, and the update's MFU against the one-core GEMM rate in its dtype. Every
    response is `tokens` long (sampling.ignore_eos): at one or two prompts a step, responses
    that end early or run long made one step's phases 0.9 s and the next's 14 s (2026-12-05
    15:20), so the ratio measured the lengths' luck, not the overlap. It trains without the KL
    term (loss.kl_coef=0, no reference forward; TRL's default): the overlap is what is
    measured, and with the reference's forward the update stayed 1.5x the generation at every
    size GRPO allows on an AVX2 EPYC in float32 (1 prompt x n=2 x 128 to 512 tokens,
    2026-12-05), so no run there was balanced."""
    from bench_peers import run_ours, settings_of, summary
    from gpu_check import update_flops

    from proactive_rl.stages.grpo.config import GrpoConfig

    run = out / "balanced"
    shutil.rmtree(run, ignore_errors=True)  # an earlier try's run, when there was one
    settings = settings_of(prompts, n, steps, tokens, 1e-6, "generate", GrpoConfig().seed)
    settings["kl_coef"] = 0.0
    settings["ignore_eos"] = True
    peak = run_ours(model_dir, prepared_data(out), run, settings, staleness=1)
    steps_of = [json.loads(x) for x in (run / "steps.jsonl").read_text().splitlines()]
    figures = summary(steps_of, peak, staleness=1)
    metrics = [json.loads(x) for x in (run / "logs/grpo/metrics.jsonl").read_text().splitlines()]
    # step 0 (engine start, warm-up) left out, as summary() leaves it out
    trained = sum(r["trained_tokens"] for r in steps_of if r["step"] > 0)
    update_s = sum(m["time/update_s"] for m in metrics if m["step"] > 0)
    flops_per_s = update_flops(run, False, params, trained) / update_s
    return {
        "settings": f"{prompts} prompts x n={n}, {tokens} new tokens, {steps} steps",
        "balanced": is_balanced(figures),
        "generate_s": figures["generate_s"],
        "update_s": figures["update_s"],
        "step_s": figures["step_s"],
        "overlap_ratio": figures["overlap_ratio"],
        "update_gflops": round(flops_per_s / 1e9, 2),
        "update_mfu": round(flops_per_s / (gflops_1 * 1e9), 3),
    }


# ---------------------------------------------------------------- the report
GOALS = {
    "generation: fraction of roofline at vLLM's fastest batch": ">= 0.60",
    "update: MFU (one core)": ">= 0.40",
    "staleness 1, balanced: step / max(generate, update)": "<= 1.10",
    "handoff: (publish + reload) / raw copy": "<= 1.25",
}


def handoff_value(h: dict) -> str:
    """The goal's ratio (over a copy into new files, as `make bench` defined it), with the
    parts and the ratio over a copy that reuses pages as the publish does."""
    return (f"{h['handoff/ratio_over_raw_copy']:.2f} (({h['handoff/publish_s']} + "
            f"{h['handoff/reload_s']}) s / {h['handoff/raw_copy_s']} s; over a copy into the "
            f"pages of the copy before, {h['handoff/reused_copy_s']} s: "
            f"{h['handoff/ratio_over_reused_copy']:.2f})")  # fmt: skip


def table(report: dict) -> str:
    best = max(report["generation"], key=lambda r: r["tokens_per_s"])
    bal = report["balanced"]
    values = [
        f"{best['fraction_of_roofline']:.2f} ({best['prompts_x_n']}, reserved "
        f"{best['reserved_cpus']}: {best['tokens_per_s']} of {best['roofline_tokens_per_s']} "
        "tokens/s)",
        f"{bal['update_mfu']:.2f} ({bal['update_gflops']} of "
        f"{report['machine']['update_gemm_gflops@1']} GFLOP/s "
        f"{report['machine']['update_dtype']})",
        f"{bal['overlap_ratio']:.2f} ({bal['settings']}: {bal['step_s']} s / "
        f"max({bal['generate_s']}, {bal['update_s']}) s"
        f"{'' if bal['balanced'] else '; NOT balanced: the ratio means little'})",
        handoff_value(report["handoff"]),
    ]
    lines = ["| figure | value | goal |", "|---|---|---|"]
    lines += [
        f"| {name} | {v} | {goal} |" for (name, goal), v in zip(GOALS.items(), values, strict=True)
    ]
    lines += ["", "| reserved | threads | prompts x n | tokens/s | roofline | fraction |"]
    lines.append("|---|---|---|---|---|---|")
    for r in report["generation"]:
        lines.append(f"| {r['reserved_cpus']} | {r['engine_threads']} | {r['prompts_x_n']} | "
                     f"{r['tokens_per_s']} | {r['roofline_tokens_per_s']} | "
                     f"{r['fraction_of_roofline']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def model_shape(model_dir: Path) -> tuple[dict, dict]:
    from gpu_check import count_parameters

    config = json.loads((model_dir / "config.json").read_text())
    linear = sum(k * n for k, n in linear_shapes(config))
    # fp32 on a CPU (pick_dtype): decode reads every linear weight once a step
    shape = {"weight_bytes": 4 * linear, "flops_per_token": 2 * linear}
    return config, {**shape, "parameters": count_parameters(model_dir)}


@click.command("bench-limits")
@click.option("--out", type=click.Path(path_type=Path), default=Path("checkpoints/bench-limits"))
@click.option("--model", default="builtin:smollm2", show_default=True)
@click.option("--grid", default=GRID, show_default=True, help="prompts x n per generate call.")
@click.option("--max-new-tokens", default=64, show_default=True)
@click.option("--balanced", default="auto", show_default=True,
              help="The balanced run (no KL term): prompts x n x new tokens, or auto "
                   "(probe at 2x2x256, then the prompts, or at 1 prompt the response "
                   "length, that even the phases out; 3 runs at most).")  # fmt: skip
@click.option("--steps", default=6, show_default=True, help="Steps of the balanced run.")
@click.option(
    "--quick", is_flag=True, help="The tiny model, small sizes (the test of this script)."
)
def run_main(out: Path, model: str, grid: str, max_new_tokens: int, balanced: str, steps: int,
             quick: bool) -> None:  # fmt: skip
    """Generation against its roofline, the update's MFU, the balanced staleness-1 ratio and the
    handoff, in one run; writes limits.json and limits.md in --out."""
    from proactive_rl.engine.models import resolve_base_model

    if quick:
        model, grid, max_new_tokens, balanced, steps = "builtin:tiny", QUICK_GRID, 8, "2x2x8", 2
    for old in ("handoff", "balanced"):  # a run starts from scratch
        shutil.rmtree(out / old, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_base_model(model, out / "base_models")
    config, shape = model_shape(model_dir)
    click.echo(f"bench-limits: the machine (bandwidth, GEMM at {model}'s shapes)")
    limits = machine(config, quick)
    click.echo(f"bench-limits: generation, {grid} x {max_new_tokens} tokens, per core layout")
    # both ways the engine may use the cores; --quick: the worker on every core only (the
    # default layout is every other test's)
    layouts = ("default", "0") if len(os.sched_getaffinity(0)) > 1 else ("default",)
    if quick and len(layouts) > 1:
        layouts = ("0",)
    rows, handoff = generation(model_dir, grid, max_new_tokens, limits, shape, out, layouts)
    click.echo(f"bench-limits: ours one step off-policy, {balanced}, {steps} steps")
    bal = balanced_case(model_dir, out, balanced, steps, shape["parameters"],
                        limits["update_gemm_gflops@1"])  # fmt: skip
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": model, "cores": os.cpu_count(),
              "shape": shape, "machine": limits, "generation": rows, "balanced": bal,
              "handoff": handoff}  # fmt: skip
    (out / "limits.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "limits.md").write_text(table(report))
    click.echo(table(report))
    click.echo(f"bench-limits: {out / 'limits.json'}, {out / 'limits.md'}")


if __name__ == "__main__":
    os.chdir(REPO)
    if sys.argv[1:2] == ["engine"]:  # one engine's sweep, in a process of its own
        engine_main(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        run_main()

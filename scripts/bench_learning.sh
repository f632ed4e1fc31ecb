#!/usr/bin/env bash
# make bench-learning: does the pipeline teach a real pretrained model to be proactive?
#
# SmolLM2-135M-Instruct (builtin:smollm2, offline): its accuracy measured on the train questions
# -> SFT warm-up built from that measurement -> GRPO with the proactive reward -> evaluation of
# base, SFT and final policy on 200 held-out questions, every rate with its 95% interval, and the
# learning goals of issue 12 (docs/benchmarks.md). The data mixes the bundled sample questions
# (arithmetic, common facts, invented trivia) with SimpleQA questions a 135M model cannot answer.
# About 35-45 minutes on 2 CPU cores, plus the NQ-open evaluation; the same commands use a GPU
# when one is present. The settings (environment variables, e.g. REWARD=ternary
# REWARD_KWARGS='{}') are in scripts/bench_settings.sh, shared with make bench-rewards.
#
# Usage: make bench-learning           (SIMPLEQA_CSV=/path/to/simple_qa_test_set.csv to choose
#                                       the SimpleQA copy; BENCH_RUN=checkpoints/... the run dir)
# Writes <run>/eval/report/{report.md,report.json,*.png}, the same for NQ-open questions in
# <run>/eval/nq-open/, and <run>/bench.json (stage wall times, seeds, each set's goals, the
# reward's optimum yardstick and the oracle frontier: stages/eval/frontier.py).
set -euo pipefail
# shellcheck source=scripts/usage.sh
source "$(dirname "$0")/usage.sh"
usage "$@"
cd "$(dirname "$0")/.."

run="${BENCH_RUN:-checkpoints/bench-learning}"
data="$run/data"
proactive="${PROACTIVE:-.venv/bin/proactive}"
source scripts/bench_settings.sh
bench_sets "$data"

rm -rf "$run"
mkdir -p "$data"
cp -r data/sample "$data/"
times="$run/bench_times.txt"
start=$SECONDS
timed() {
    local name=$1 began=$SECONDS
    shift
    echo "=== bench-learning: $name"
    "$@"
    echo "$name $((SECONDS - began))" >>"$times"
}

timed prep with_sets PREP_SETS "$proactive" prep --data-dir "$data"
# What the base model knows: MEASURE_N answers to every train question, then the SFT data again
# from that measurement (same RL options, so the RL files and question numbers are unchanged).
timed measure with_sets MEASURE_SETS "$proactive" eval --data-dir "$data" --run-dir "$run"
PREP_SETS+=("known_from=$run/eval/base-train/samples.jsonl" "${KNOWN_SETS[@]}")
timed prep-known with_sets PREP_SETS "$proactive" prep --data-dir "$data"

timed sft with_sets SFT_SETS "$proactive" sft --data-dir "$data" --run-dir "$run"

ROLLOUT_SETS+=("${REWARD_SETS[@]}")
rl() {
    with_sets GRPO_SETS "$proactive" grpo --data-dir "$data" --run-dir "$run" &
    local grpo=$!
    with_sets ROLLOUT_SETS "$proactive" rollout --data-dir "$data" --run-dir "$run" ||
        { kill "$grpo" 2>/dev/null; wait "$grpo" || true; return 1; }
    wait "$grpo"
}
timed rl rl

timed eval with_sets EVAL_SETS "$proactive" eval --data-dir "$data" --run-dir "$run"
# The same checkpoints on questions of another kind, never trained on (generalisation): the
# first NQ_ROWS NQ-open questions, prepared in a data folder of their own and evaluated whole.
if [ "$NQ_ROWS" -gt 0 ]; then
    nq_data="$run/data-nq-open"
    mkdir -p "$nq_data"
    cp -r data/sample "$nq_data/"
    with_sets NQ_PREP_SETS "$proactive" prep --data-dir "$nq_data" >/dev/null
    EVAL_SETS+=(split=all name=nq-open)
    timed eval-nq-open with_sets EVAL_SETS "$proactive" eval --data-dir "$nq_data" --run-dir "$run"
fi

# The learning goals (report.json's acceptance) and what hedging alone could reach with the base
# model's knowledge (the oracle frontier eval writes under the base checkpoint), beside the wall
# times.
export "${BENCH_SETTINGS[@]}"
python3 - "$run" "$times" "$((SECONDS - start))" "${BENCH_SETTINGS[@]}" <<'PY'
import json, os, sys
run, times, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = {name: os.environ[name] for name in sys.argv[4:]}
stages = {name: int(s) for name, s in (line.split() for line in open(times))}
def summary(name):
    """One report's goals, the optimum yardstick per checkpoint and the base model's oracle
    frontier (the recipe's grader; the normalised one's beside it)."""
    report = json.load(open(f"{run}/eval/{name}/report.json"))
    base = next(c for c in report["checkpoints"] if c["kind"] == "base")
    frontier = {"checkpoint": base["label"], **base["oracle_frontier"]["substring"]}
    frontier["normalised"] = base["oracle_frontier"]["normalised"]
    return {
        "questions": report["questions"],
        "n": report["n"],
        "goals": {c["id"]: {"passed": c["passed"], "detail": c["detail"]} for c in report["acceptance"]},
        "optimum": {c["label"]: c["optimum"] for c in report["checkpoints"]},
        "oracle_frontier": frontier,
        "seeds": report["seeds"],
    }

reports = {"held-out": summary("report")}
if os.path.exists(f"{run}/eval/nq-open/report.json"):
    reports["nq-open"] = summary("nq-open")
held_out = reports["held-out"]
bench = {
    "settings": settings,
    "wall_seconds": total,
    "stage_seconds": stages,
    **{key: held_out[key] for key in ("seeds", "questions", "n", "goals", "oracle_frontier")},
    "reports": reports,
}
json.dump(bench, open(f"{run}/bench.json", "w"), indent=2)
for set_name, one in reports.items():
    print(f"{set_name} ({one['questions']} questions x n={one['n']}):")
    f = one["oracle_frontier"]
    print(f"  oracle frontier of {f['checkpoint']}: base accuracy {f['base_accuracy']:.1%}; "
          f"at most {f['best_accuracy_within_hallucination_max']:.1%} correct with hallucination "
          f"<= 10% (goal {f['accuracy_goal']:.1%}); best truthfulness {f['best_truthfulness']:+.1%}")
    for name, goal in one["goals"].items():
        print(f"  {'PASS' if goal['passed'] else 'fail' if goal['passed'] is False else '  - '} {name}: {goal['detail']}")
print(f"bench-learning: {total} s in all {stages}; report: {run}/eval/report/report.md")
PY

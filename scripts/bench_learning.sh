#!/usr/bin/env bash
# make bench-learning: does the pipeline teach a real pretrained model to be proactive?
#
# SmolLM2-135M-Instruct (builtin:smollm2, offline) -> SFT warm-up built from question/answer
# pairs -> GRPO with the proactive reward -> evaluation of base, SFT and final policy on held-out
# questions. The data mixes the bundled sample questions (arithmetic, common facts, invented
# trivia) with SimpleQA questions a 135M model cannot answer. About 30-45 minutes on 2 CPU cores;
# the same commands use a GPU when one is present.
#
# Usage: make bench-learning           (SIMPLEQA_CSV=/path/to/simple_qa_test_set.csv to choose
#                                       the SimpleQA copy; BENCH_RUN=checkpoints/... the run dir)
# Writes <run>/eval/report/{report.md,report.json,*.png} and <run>/bench.json (stage wall times).
set -euo pipefail
cd "$(dirname "$0")/.."

run="${BENCH_RUN:-checkpoints/bench-learning}"
data="$run/data"
simpleqa="${SIMPLEQA_CSV:-../shared/data/simpleqa/simple_qa_test_set.csv}"
proactive="${PROACTIVE:-.venv/bin/proactive}"
if [ ! -f "$simpleqa" ]; then
    echo "bench-learning: no SimpleQA CSV at $simpleqa; set SIMPLEQA_CSV=/path/to/simple_qa_test_set.csv" >&2
    exit 2
fi

# The settings, in one place (they are also saved into the run's configs/ and the report).
SIMPLEQA_ROWS=${SIMPLEQA_ROWS:-200}
SFT_SAMPLES=${SFT_SAMPLES:-160}
SFT_EPOCHS=${SFT_EPOCHS:-3}
# GRPO cycles a pool of RL_POOL training prompts for RL_EPOCHS epochs, so the first and the last
# epoch score the same questions: the reward curve then measures learning, not which questions
# a step happened to draw (run 2 drew fresh prompts every step and its curve was noise).
RL_POOL=${RL_POOL:-40}
RL_EPOCHS=${RL_EPOCHS:-5}
RL_PROMPTS=${RL_PROMPTS:-8}
# Disk: a SmolLM2 policy folder is ~0.5 GB, so only the newest two are kept (the eval compares
# the final one), and the optimizer state (~0.8 GB) is saved once per epoch.
RL_STEPS_PER_EPOCH=$((RL_POOL / RL_PROMPTS))
RL_N=${RL_N:-4}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-96}
EVAL_N=${EVAL_N:-4}
# Questions the SFT data answers (the rest get a proactive block). Measured on SmolLM2-135M at
# temperature 0.7 (bench of 2026-11-24, docs/benchmarks.md): base accuracy arithmetic 37.5%,
# general 41.7%, invented trivia 7.5%, SimpleQA 0%.
KNOWN=${KNOWN:-'["arithmetic", "general"]'}
RL_LR=${RL_LR:-2e-5}

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

timed prep "$proactive" prep --data-dir "$data" \
    --set "rl_source=[\"$data/sample/rl.jsonl\", \"$simpleqa\"]" \
    --set "rl_source_limits=[null, $SIMPLEQA_ROWS]" --set shuffle_rl=true \
    --set test_fraction=0.08 --set sft_source=build --set "known_categories=$KNOWN" \
    --set num_sft_samples="$SFT_SAMPLES" --set proactive_fraction=0.5

timed sft "$proactive" sft --data-dir "$data" --run-dir "$run" \
    --set base_model=builtin:smollm2 --set epochs="$SFT_EPOCHS" --set learning_rate=1e-4 \
    --set max_length=384 --set lr_scheduler=cosine

rl() {
    "$proactive" grpo --data-dir "$data" --run-dir "$run" \
        --set n="$RL_N" --set prompts_per_step="$RL_PROMPTS" --set max_prompts="$RL_POOL" \
        --set epochs="$RL_EPOCHS" --set mini_batch_prompts="$RL_PROMPTS" --set micro_batch_size=8 \
        --set learning_rate="$RL_LR" --set min_learning_rate=2e-6 --set loss.is_correction=none \
        --set keep_policies=2 --set state_every_steps="$RL_STEPS_PER_EPOCH" &
    local grpo=$!
    "$proactive" rollout --data-dir "$data" --run-dir "$run" \
        --set sampling.max_new_tokens="$MAX_NEW_TOKENS" --set generation_batch_prompts=8 \
        --set num_examine=2 || { kill "$grpo" 2>/dev/null; wait "$grpo" || true; return 1; }
    wait "$grpo"
}
timed rl rl

timed eval "$proactive" eval --data-dir "$data" --run-dir "$run" \
    --set 'checkpoints=["base", "sft", "final"]' --set n="$EVAL_N" \
    --set sampling.max_new_tokens="$MAX_NEW_TOKENS" --set sampling.temperature=0.7

python3 - "$run" "$times" "$((SECONDS - start))" <<'PY'
import json, sys
run, times, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
stages = {name: int(s) for name, s in (line.split() for line in open(times))}
json.dump({"wall_seconds": total, "stage_seconds": stages}, open(f"{run}/bench.json", "w"), indent=2)
print(f"bench-learning: {total} s in all {stages}; report: {run}/eval/report/report.md")
PY

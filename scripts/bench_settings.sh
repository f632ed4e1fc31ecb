# The settings of make bench-learning and make bench-rewards, in one place: sourced by both
# scripts (scripts/bench_learning.sh, scripts/bench_rewards.sh), so the rewards' head to head runs
# exactly the benchmark's data, SFT, RL and evaluation. Every setting is an environment variable
# (e.g. REWARD=ternary REWARD_KWARGS='{}'); they are also saved into each run's configs/ and
# reports. `bench_sets DATA` fills the arrays of what each stage is given (--set key=value).

SIMPLEQA_CSV="${SIMPLEQA_CSV:-../shared/data/simpleqa/simple_qa_test_set.csv}"
# NQ-open (evaluation only): NQ_ROWS=0 leaves it out.
NQ_OPEN="${NQ_OPEN:-../shared/data/nq-open/nq_open_eval_1000.jsonl}"
NQ_ROWS=${NQ_ROWS:-200}
if [ "$NQ_ROWS" -gt 0 ] && [ ! -f "$NQ_OPEN" ]; then
    echo "bench: no NQ-open questions at $NQ_OPEN; set NQ_OPEN=/path/to/nq_open_eval_1000.jsonl or NQ_ROWS=0" >&2
    exit 2
fi
if [ ! -f "$SIMPLEQA_CSV" ]; then
    echo "bench: no SimpleQA CSV at $SIMPLEQA_CSV; set SIMPLEQA_CSV=/path/to/simple_qa_test_set.csv" >&2
    exit 2
fi

# The settings, in one place (they are also saved into the run's configs/ and the report).
BASE_MODEL=${BASE_MODEL:-builtin:smollm2}
SIMPLEQA_ROWS=${SIMPLEQA_ROWS:-200}
# Held-out questions the final report grades (issue 12: at least 200, every rate with its 95%
# interval); the rest of the mix is the train split.
TEST_ROWS=${TEST_ROWS:-200}
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
# RL_N is grpo's n, the group size; EVAL_N (and MEASURE_N below) eval's n, samples per question
# (veRL val_kwargs.n): two settings of one name.
RL_N=${RL_N:-4}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-96}
EVAL_N=${EVAL_N:-4}
# Questions the SFT data answers (the rest get a proactive block): those the base model answers
# correctly in at least KNOWN_THRESHOLD of MEASURE_N samples (measured on the train split before
# SFT: `known_from`); unmeasured ones fall back to KNOWN categories. By category the base model
# gets arithmetic 37.5%, general 41.7%, invented trivia 7.5%, SimpleQA 0% (docs/benchmarks.md),
# so a category is too coarse: the measurement marks the questions it actually answers.
# The defaults from here on are run 7's (docs/benchmarks.md), the best of runs 5-8: one right
# answer in 4 marks a question known (67 of 300; at 0.5 only 39, and the SFT model hedged on 85%).
KNOWN=${KNOWN:-'["arithmetic", "general"]'}
PROACTIVE_FRACTION=${PROACTIVE_FRACTION:-0.4}
MEASURE_N=${MEASURE_N:-4}
KNOWN_THRESHOLD=${KNOWN_THRESHOLD:-0.25}
# The GRPO pool (the first RL_POOL train rows): RL_KNOWN_FRACTION makes prep order the train
# split so that this fraction of the pool are questions the measurement marks known, instead of
# the mix's mostly-never-right questions (null: the shuffled split's own order; runs 5 and 6
# then saw group accuracy 0 and collapsed onto always hedging).
RL_KNOWN_FRACTION=${RL_KNOWN_FRACTION:-0.5}
# true: that fraction within every kind (sub_category) of question on its own, so the pool's
# kinds do not tell known from unknown and GRPO must learn it per question (issue 23's lever
# "known and unknown not separable by kind"; docs/benchmarks.md). false: over the whole split,
# where the known half is mostly arithmetic and common facts.
RL_KNOWN_WITHIN_KINDS=${RL_KNOWN_WITHIN_KINDS:-false}
# GRPO's sampling temperature (the rollout's), the evaluation's 0.7.
RL_TEMPERATURE=${RL_TEMPERATURE:-0.7}
# The recipe's reward at its beta 0.5 (answering pays from 40% accuracy in groups of 4): in the
# rewards' head to head (make bench-rewards, 2026-12-03, docs/benchmarks.md) it hallucinated
# 25.0% on the held-out questions and 26.0% on NQ-open where beta 0.3 (run 7's, the default
# before) hallucinated 31.9% and 42.2% with the same data, SFT and seeds; ternary was level
# with 0.5 within the intervals.
REWARD=${REWARD:-proactive}
REWARD_KWARGS=${REWARD_KWARGS:-'{"beta": 0.5}'}
RL_LR=${RL_LR:-2e-5}
# SFT's and the GRPO update's precision. fp32, not the stages' auto (bf16 autocast on a CPU with
# AMX, engine/precision.py): every figure in docs/benchmarks.md was trained in float32, and a
# run must give them again on any CPU. auto trains faster where the CPU has AMX, to other figures.
TRAIN_PRECISION=${TRAIN_PRECISION:-fp32}
# The generation engine of measure, rollout and eval: empty = the stages' own default (vLLM where
# it runs); BACKEND=transformers where vLLM's start-up would dominate (the tiny model in tests).
BACKEND=${BACKEND:-}

# vLLM's CPU build keeps one core from the model's threads by default; evaluation runs the engine
# alone, where every core measured 1.3-1.9x faster (docs/benchmarks.md). 0 from 2026-12-03: the
# evaluations before it (run 7, the first bench-rewards pieces) sampled on one core. The base
# model's measurement (which decides the SFT data) keeps the default, so training is unchanged.
EVAL_RESERVED_CORES=${EVAL_RESERVED_CORES:-0}

# The settings every run records (bench.json, the sweep's settings).
BENCH_SETTINGS=(BASE_MODEL SIMPLEQA_ROWS TEST_ROWS SFT_SAMPLES SFT_EPOCHS RL_POOL RL_EPOCHS
    RL_PROMPTS RL_N MAX_NEW_TOKENS EVAL_N KNOWN PROACTIVE_FRACTION MEASURE_N KNOWN_THRESHOLD
    RL_KNOWN_FRACTION RL_KNOWN_WITHIN_KINDS RL_TEMPERATURE REWARD REWARD_KWARGS RL_LR NQ_ROWS BACKEND
    EVAL_RESERVED_CORES TRAIN_PRECISION)

# What each stage is given, for the data folder $1 (which holds sample/). Only what differs from
# the stages' defaults (the defaults have one owner each: the stage's config class).
bench_sets() {
    PREP_SETS=("rl_source=[\"$1/sample/rl.jsonl\", \"$SIMPLEQA_CSV\"]"
        "rl_source_limits=[null, $SIMPLEQA_ROWS]" shuffle_rl=true "test_rows=$TEST_ROWS"
        sft_source=build "known_categories=$KNOWN" "num_sft_samples=$SFT_SAMPLES"
        "proactive_fraction=$PROACTIVE_FRACTION")
    # the second prep, from the base model's measured accuracy (add known_from=SAMPLES)
    KNOWN_SETS=("known_threshold=$KNOWN_THRESHOLD" "rl_known_fraction=$RL_KNOWN_FRACTION"
        "rl_known_within_kinds=$RL_KNOWN_WITHIN_KINDS")
    MEASURE_SETS=(split=train name=base-train "checkpoints=$BASE_MODEL" "n=$MEASURE_N"
        "sampling.max_new_tokens=$MAX_NEW_TOKENS" sampling.temperature=0.7 plots=false)
    SFT_SETS=("base_model=$BASE_MODEL" "epochs=$SFT_EPOCHS" learning_rate=1e-4 max_length=384
        lr_scheduler=cosine "precision=$TRAIN_PRECISION")
    GRPO_SETS=("n=$RL_N" "prompts_per_step=$RL_PROMPTS" "max_prompts=$RL_POOL"
        "epochs=$RL_EPOCHS" "mini_batch_prompts=$RL_PROMPTS" "learning_rate=$RL_LR"
        keep_policies=2 "state_every_steps=$RL_STEPS_PER_EPOCH" "precision=$TRAIN_PRECISION")
    ROLLOUT_SETS=("sampling.max_new_tokens=$MAX_NEW_TOKENS"
        "sampling.temperature=$RL_TEMPERATURE" num_examine=2)
    REWARD_SETS=("reward=$REWARD" "reward_kwargs=$REWARD_KWARGS")
    EVAL_SETS=('checkpoints=["base", "sft", "final"]' "n=$EVAL_N"
        "sampling.max_new_tokens=$MAX_NEW_TOKENS" sampling.temperature=0.7
        "vllm.cpu_reserved_cores=$EVAL_RESERVED_CORES")
    # an NQ-open data folder: its first NQ_ROWS questions, graded whole (eval split=all)
    NQ_PREP_SETS=("rl_source=$NQ_OPEN" "rl_source_limits=[$NQ_ROWS]" test_rows=1)
    if [ -n "$BACKEND" ]; then
        MEASURE_SETS+=("backend=$BACKEND")
        ROLLOUT_SETS+=("backend=$BACKEND")
        EVAL_SETS+=("backend=$BACKEND")
    fi
}

# `with_sets ARRAY command...`: run the command with --set for every item of ARRAY appended.
with_sets() {
    local -n _items=$1
    shift
    local args=()
    for item in "${_items[@]}"; do args+=(--set "$item"); done
    "$@" "${args[@]}"
}

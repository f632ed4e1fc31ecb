#!/usr/bin/env bash
# make bench-rewards: the rewards head to head on SmolLM2 (issue 23), each trained and evaluated
# exactly as make bench-learning (the settings of scripts/bench_settings.sh):
#
#   proactive beta 0.3 (run 7's), proactive at the recipe's beta 0.5 (bench-learning's default),
#   proactive_strict beta 0.3, ternary (+1 / 0 / -1), ternary with abstain 0.1
#
# One measurement of the base model and one SFT, shared by all five; per reward GRPO, then the
# evaluation of base, SFT and final policy on the 200 held-out questions and on NQ_ROWS NQ-open
# questions (never trained on), each with its 95% intervals, the learning goals and the reward's
# optimum yardstick; one comparison report. It is a `proactive sweep`, so it is resumable: the
# same command continues where it stopped (run it in pieces; on 2 cores the three pieces of
# 2026-12-03 took 83 min after the base measurement, about 2.5 hours expected for all five).
#
# Usage: make bench-rewards [BENCH_REWARDS_ARGS=--dry-run]
#        make bench-rewards BENCH_REWARDS_ARGS='--only sft_rl_ternary --only sft_rl_ternary_abstain0.1'
#        (some of the five: a piece of the sweep; the shared steps are done once either way)
# Writes checkpoints/sweeps/bench-rewards/ (report/report.md, one folder per reward, measure/,
# the sweep config it ran: bench-rewards.toml) and data/sweeps/bench-rewards/.
set -euo pipefail
# shellcheck source=scripts/usage.sh
source "$(dirname "$0")/usage.sh"
usage "$@"
cd "$(dirname "$0")/.."

name="${BENCH_NAME:-bench-rewards}"
checkpoints="${BENCH_CHECKPOINTS:-checkpoints}"
proactive="${PROACTIVE:-.venv/bin/proactive}"
source scripts/bench_settings.sh
bench_sets data
root="$checkpoints/sweeps/$name"
measure="$root/measure"
mkdir -p "$root"

# What the base model knows, as bench-learning measures it (done once: prep does nothing when
# its inputs are unchanged, and eval --resume nothing when its report is published).
measured="$measure/eval/base-train/samples.jsonl"
if [[ " $* " != *" --dry-run "* ]]; then
    mkdir -p "$measure/data"
    cp -r data/sample "$measure/data/"
    with_sets PREP_SETS "$proactive" prep --data-dir "$measure/data"
    with_sets MEASURE_SETS "$proactive" eval --data-dir "$measure/data" --run-dir "$measure" \
        --resume
fi
PREP_SETS+=("known_from=$measured" "${KNOWN_SETS[@]}")

# The sweep: five rewards over one SFT, each scored with the reward it trained with.
json_array() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; }
EVAL_SETS=("${EVAL_SETS[@]/checkpoints=*/}")  # the sweep's eval_checkpoints names them
export BENCH_NAME="$name" BENCH_CHECKPOINTS="$checkpoints" BASE_MODEL NQ_OPEN NQ_ROWS
export SETS_PREP="$(json_array "${PREP_SETS[@]}")" SETS_SFT="$(json_array "${SFT_SETS[@]}")" \
    SETS_GRPO="$(json_array "${GRPO_SETS[@]}")" SETS_ROLLOUT="$(json_array "${ROLLOUT_SETS[@]}")" \
    SETS_EVAL="$(json_array "${EVAL_SETS[@]}")"
config="$root/bench-rewards.toml"
python3 - "$config" <<'PY'
import json, os, sys

env = os.environ
lines = [
    "# written by scripts/bench_rewards.sh from scripts/bench_settings.sh: edit those",
    f"name = {json.dumps(env['BENCH_NAME'])}",
    f"base_model = {json.dumps(env['BASE_MODEL'])}",
    f"checkpoints_dir = {json.dumps(env['BENCH_CHECKPOINTS'])}",
    'data_dir = "data"',
    "jobs = 1",
    'eval_checkpoints = ["base", "sft", "final"]',
    "grids = [",
    '  {reward = ["proactive"], beta = [0.3, 0.5]},',
    '  {reward = ["proactive_strict"], beta = [0.3]},',
    '  {reward = ["ternary"]},',
    '  {reward = ["ternary"], abstain = [0.1]},',
    "]",
]
if int(env["NQ_ROWS"]) > 0:
    lines += [f"eval_sets = {{nq-open = {json.dumps(env['NQ_OPEN'])}}}"]
    lines += [f"eval_set_rows = {env['NQ_ROWS']}"]
lines += ["", "[settings]"]
for stage in ("prep", "sft", "grpo", "rollout", "eval"):
    items = [i for i in json.loads(env[f"SETS_{stage.upper()}"]) if i]
    lines.append(f"{stage} = [{', '.join(json.dumps(i) for i in items)}]")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
"$proactive" sweep --config "$config" "$@"

"""The sweep's comparison report: each run's final policy beside the others, every rate with its
95% interval (from each run's eval report), the SFT and base models it started from, seeds and
wall times; report.md, report.json and comparison.png, published atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TypedDict

from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.publish import read_json, staged, write_json_atomic
from proactive_rl.stages.reports import fmt, table
from proactive_rl.stages.sweep.config import SweepConfig
from proactive_rl.stages.sweep.plan import Prefix, Run

RATES: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("hallucination_rate", "hallucination"),
    ("not_attempted_rate", "not attempted"),
    ("truthfulness", "truthfulness"),
    ("proactive_rate", "proactive"),
)

# The proactive rate where the base model never / always answers right (eval's
# calibration_by_base): what the goal "hedges where base fails" compares.
HEDGING = "hedging where base never / always right"

# The learning goals of eval's acceptance checks (stages/eval/acceptance.py), by id.
GOALS: tuple[tuple[str, str], ...] = (
    ("goal_hallucination", "hallucination <= 10%"),
    ("goal_accuracy_kept", "accuracy >= 80% of base"),
    ("goal_truthfulness", "truthfulness >= 0"),
    ("goal_hedges_where_base_fails", "hedges where base fails"),
)


def _eval(folder: Path, name: str = "report") -> dict[str, Any]:
    return read_json(RunPaths(folder).eval_report(name))


def _judged(report: dict[str, Any]) -> dict[str, Any]:
    """A report's final checkpoint, size and goals, and its base model's oracle frontier: what
    a table row of it shows."""
    base = next((c for c in report["checkpoints"] if c.get("oracle_frontier")), None)
    return {
        "final": _entry(report["checkpoints"][-1]),
        "frontier": base["oracle_frontier"] if base else None,
        "questions": report["questions"],
        "n": report["n"],
        "goals": {c["id"]: c["passed"] for c in report.get("acceptance", [])},
    }


def _pct(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "–"
    if interval is None:
        return f"{100 * value:.1f}%"
    return f"{100 * value:.1f}% [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _entry(checkpoint: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "label",
        "metrics",
        "intervals",
        "metrics_normalised",
        "intervals_normalised",
        "optimum",
        "consistency_frontier",
    )
    out = {k: checkpoint[k] for k in keep if k in checkpoint}
    out["calibration"] = checkpoint["calibration"]
    out["calibration_by_base"] = checkpoint.get("calibration_by_base") or {}
    out["risk_coverage_area"] = checkpoint.get("risk_coverage", {}).get("area")
    return out


class Reference(TypedDict):
    """An SFT several runs started from: its base and SFT checkpoints' results, its wall time,
    and what made it differ."""

    base: dict[str, Any] | None
    sft: dict[str, Any] | None
    seconds: float | None
    settings: list[str]


class RunRow(TypedDict):
    """One run's line of the report: its final policy's results and how it got there."""

    name: str
    axes: dict[str, Any]
    folder: str
    sft: str | None
    final: dict[str, Any]
    questions: int
    n: int
    reward_first: float | None
    reward_last: float | None
    rl_steps: int
    seeds: dict[str, Any]
    seconds: float | None
    goals: dict[str, bool | None]
    frontier: dict[str, Any] | None  # the base model's oracle frontier, per grader
    sets: dict[str, dict[str, Any]]  # eval set -> its report's final entry, size and goals


def collect(
    runs: list[Run], steps: dict[str, dict[str, Any]], sets: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Every number of the report, read from the runs' own eval reports."""
    references: dict[str, Reference] = {}
    rows: list[RunRow] = []
    for run in runs:
        rows.append(run_row(run, steps, sets))
        if run.sft is not None:
            references[run.sft.folder.name] = reference(run, run.sft, steps)
    return {"runs": rows, "references": references}


def reference(run: Run, sft: Prefix, steps: dict[str, dict[str, Any]]) -> Reference:
    """The SFT a run started from, from the SFT's own eval report (base and SFT checkpoints)."""
    by_kind = {c["kind"]: c for c in _eval(sft.folder)["checkpoints"]}
    return {
        "base": _entry(by_kind["base"]) if "base" in by_kind else None,
        "sft": _entry(by_kind["sft"]) if "sft" in by_kind else None,
        "seconds": steps.get(sft.folder.name, {}).get("seconds"),
        # what made this SFT differ: its data (prep) and its own settings
        "settings": [
            *(o for o in run.data.overrides if not o.startswith(("sft_source", "rl_source"))),
            *sft.overrides,
        ],
    }


def run_row(run: Run, steps: dict[str, dict[str, Any]], sets: tuple[str, ...] = ()) -> RunRow:
    """A run's final policy (its eval report's last checkpoint), its training curve and its
    final policy on every eval set."""
    report = _eval(run.folder)
    curve = report["training"]["curve"] or {}
    return {
        "name": run.name,
        "axes": run.axes,
        "folder": str(run.folder),
        "sft": run.sft.folder.name if run.sft is not None else None,
        **_judged(report),
        "sets": {name: _judged(_eval(run.folder, name)) for name in sets},
        "reward_first": curve.get("reward_first"),
        "reward_last": curve.get("reward_last"),
        "rl_steps": len(curve.get("steps", [])),
        "seeds": report["seeds"],
        "seconds": steps.get(run.name, {}).get("seconds"),
    }


def markdown(config: SweepConfig, data: dict[str, Any]) -> str:
    runs: list[RunRow] = data["runs"]
    out = [
        f"# Sweep `{config.name}`",
        "",
        *runs_table(runs),
        *goals_table(runs),
        *frontier_table(runs),
        *optimum_table(runs),
        *[line for name in config.eval_sets for line in set_section(name, runs)],
        *references_table(data["references"]),
        "",
        "## Runs",
        "",
        *[f"- `{r['name']}`: {json.dumps(r['axes'])}, folder `{r['folder']}`" for r in runs],
        "",
        "![comparison](comparison.png)",
        "",
    ]
    return "\n".join(out)


def runs_table(runs: list[RunRow]) -> list[str]:
    """The lead paragraph and one line per run: its final policy's rates and how it trained."""
    first = runs[0]
    return [
        f"{len(runs)} runs; each final policy evaluated on {first['questions']} held-out questions "
        f"x n={first['n']}. Brackets: 95% bootstrap intervals (questions resampled). Rates graded "
        "with the recipe's substring rule; the normalised grader's accuracy is in its own column.",
        "",
        "| run | "
        + " | ".join(title for _, title in RATES)
        + f" | accuracy (normalised) | {HEDGING} | reward first -> last | "
        "seeds | wall time |",
        "|" + "---|" * (len(RATES) + 6),
        *[f"| {row['name']} | " + " | ".join(run_cells(row)) + " |" for row in runs],
    ]


def run_cells(row: RunRow) -> list[str]:
    final = row["final"]
    m, ci = final["metrics"], final.get("intervals", {})
    norm = final.get("metrics_normalised", {})
    # by the base model's accuracy, as the goal "hedges where base fails" judges it
    cal = final.get("calibration_by_base") or {}
    cells = [_pct(m[key], ci.get(key)) for key, _ in RATES]
    cells.append(_pct(norm.get("accuracy"), final.get("intervals_normalised", {}).get("accuracy")))
    hard, easy = cal.get("hardest_proactive_rate"), cal.get("easiest_proactive_rate")
    cells.append(f"{_pct(hard)} / {_pct(easy)}")
    first_r, last_r = row["reward_first"], row["reward_last"]
    cells.append(
        "–" if first_r is None else f"{first_r:.3f} -> {last_r:.3f} ({row['rl_steps']} steps)"
    )
    cells.append(", ".join(f"{k} {v}" for k, v in row["seeds"].items()))
    cells.append(_seconds(row["seconds"]))
    return cells


def set_section(name: str, runs: list[RunRow]) -> list[str]:
    """The final policies on an eval set: rates, goals and the optimum yardstick."""
    rows = [{**r, **r["sets"][name]} for r in runs]
    first = rows[0]
    return [
        "",
        f"## On `{name}`: questions of another kind, never trained on",
        "",
        f"{first['questions']} questions x n={first['n']}, the same checkpoints and reward.",
        "",
        *table(
            [
                "run",
                *(title for _, title in RATES),
                "accuracy (normalised)",
                HEDGING,
            ],
            [[row["name"], *run_cells(row)[: len(RATES) + 2]] for row in rows],
        ),
        *goals_table(rows),
        *frontier_table(rows),
        *optimum_table(rows),
    ]


def goals_table(runs: list[RunRow]) -> list[str]:
    """Eval's learning goals per run, where its report compared against the base model."""
    if not any(r["goals"].get(goal) is not None for r in runs for goal, _ in GOALS):
        return []
    mark = {True: "PASS", False: "fail", None: "–"}
    header = ["run (learning goals vs the base model)", *(title for _, title in GOALS)]
    rows = [[r["name"], *(mark[r["goals"].get(goal)] for goal, _ in GOALS)] for r in runs]
    return ["", *table(header, rows)]


def frontier_table(runs: list[RunRow]) -> list[str]:
    """Each final policy beside what hedging alone could reach with its base model's knowledge
    (eval's oracle frontier, normalised grader): how close a run gets to the learning goals,
    and whether any reward could reach them without the model knowing more; and beside what
    hedging by the agreement of its own samples reaches (the base model's free-form answers
    never agree word for word, so only the final's)."""
    rows = []
    for r in runs:
        oracle = (r.get("frontier") or {}).get("normalised")
        if oracle is None:
            continue
        m, norm = r["final"]["metrics"], r["final"].get("metrics_normalised", {})
        rows.append(
            [
                r["name"],
                f"{_pct(norm.get('accuracy'))} / {_pct(m['hallucination_rate'])} / "
                f"{_pct(m['truthfulness'])}",
                _pct(oracle["best_accuracy_within_hallucination_max"]),
                _pct(oracle["accuracy_goal"]),
                "yes" if oracle["both_reachable_by_hedging"] else "no",
                f"{100 * oracle['best_truthfulness']:+.1f}%",
                _agreement(r["final"].get("consistency_frontier")),
            ]
        )
    if not rows:
        return []
    header = [
        "run (vs the oracle frontier)",
        "final: accuracy (normalised) / hallucination / truthfulness",
        "oracle: most correct at <= 10% hallucination",
        "goal: 80% of the base's accuracy",
        "both goals by hedging alone",
        "oracle's best truthfulness",
        "final's own agreement: most correct at <= 10% / best truthfulness",
    ]
    return ["", *table(header, rows)]


def _agreement(view: dict[str, Any] | None) -> str:
    """A self-consistency frontier's cell (eval's, normalised grader)."""
    norm = (view or {}).get("normalised")
    if norm is None or not norm.get("comparable", True):
        return "–"
    best = _pct(norm["best_accuracy_within_hallucination_max"])
    return f"{best} / {100 * norm['best_truthfulness']:+.1f}%"


def optimum_table(runs: list[RunRow]) -> list[str]:
    """Each final policy against the best actions of the reward it trained with (eval's
    optimum yardstick): the reward's fault or the training's."""
    judged = [r for r in runs if "optimum" in r["final"]]
    if not judged:
        return []
    lines = [
        "",
        "## Against each reward's own optimum",
        "",
        "At the policy's own answer accuracy per question: where its reward asks for an answer, "
        "the share of questions whose majority action is the best one, the expected reward it "
        "earns against the best actions', and its wrong answers split into rational (answering "
        "was the reward's best bet) and mistaken (hedging was); docs/eval.md.",
        "",
    ]
    header = ["run", "reward asks for an answer from", "best action", "reward earned / best"]
    header += ["rational hallucinations", "mistaken hallucinations", "missed answers"]
    rows = []
    for row in judged:
        o = row["final"]["optimum"]
        earned, best = o["reward_earned"], o["reward_best"]
        rows.append(
            [
                row["name"],
                fmt(o["threshold"], "pct"),
                fmt(o["best_action_rate"], "pct"),
                "–" if earned is None else f"{fmt(earned)} / {fmt(best)}",
                *(
                    fmt(o[k], "pct")
                    for k in (
                        "rational_hallucination_rate",
                        "mistaken_hallucination_rate",
                        "missed_answer_rate",
                    )
                ),
            ]
        )
    return lines + table(header, rows)


def references_table(references: dict[str, Reference]) -> list[str]:
    """The SFTs the runs started from, beside the base model (nothing when no run had SFT)."""
    if not references:
        return []
    return [
        "",
        "## Where the runs started: base model and SFT",
        "",
        "| SFT | base accuracy | base hallucination | SFT accuracy | SFT hallucination | "
        "SFT proactive | SFT wall time | settings |",
        "|---|---|---|---|---|---|---|---|",
        *[reference_line(name, ref) for name, ref in references.items()],
    ]


def reference_line(name: str, ref: Reference) -> str:
    base, sft = ref["base"] or {}, ref["sft"] or {}
    return (
        f"| {name} | {_rate(base, 'accuracy')} | {_rate(base, 'hallucination_rate')} | "
        f"{_rate(sft, 'accuracy')} | {_rate(sft, 'hallucination_rate')} | "
        f"{_rate(sft, 'proactive_rate')} | {_seconds(ref['seconds'])} | "
        f"`{' '.join(ref['settings'])}` |"
    )


def _rate(entry: dict[str, Any], key: str) -> str:
    if not entry:
        return "–"
    return _pct(entry["metrics"][key], entry.get("intervals", {}).get(key))


def _seconds(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds:.0f} s"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    keys = RATES[:4]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(runs) + 2), 4))
    width = 0.8 / len(keys)
    for i, (key, title) in enumerate(keys):
        xs = [r + (i - (len(keys) - 1) / 2) * width for r in range(len(runs))]
        values = [row["final"]["metrics"][key] for row in runs]
        bounds = [
            row["final"].get("intervals", {}).get(key) or [v, v]
            for row, v in zip(runs, values, strict=True)
        ]
        errors = [
            [v - lo for v, (lo, _) in zip(values, bounds, strict=True)],
            [hi - v for v, (_, hi) in zip(values, bounds, strict=True)],
        ]
        ax.bar(xs, values, width=width, yerr=errors, capsize=2, label=title)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(range(len(runs)), [r["name"] for r in runs], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("fraction of responses (truthfulness: correct - incorrect)")
    ax.set_title("Final policies (95% intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    config: SweepConfig, runs: list[Run], steps: dict[str, dict[str, Any]], folder: Path
) -> None:
    sets = tuple(config.eval_sets)
    data = {"name": config.name, "created": time.time(), **collect(runs, steps, sets)}
    with staged(folder, {"runs": len(runs)}) as tmp:
        write_json_atomic(tmp / "report.json", data)
        (tmp / "report.md").write_text(markdown(config, data))
        plot(data, tmp / "comparison.png")

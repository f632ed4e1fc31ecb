"""Turn the evaluation results into what a reader looks at: report.md and the PNG plots (the
acceptance checks are in acceptance.py). Pure functions of the report dict, except the plots
(matplotlib, imported lazily, Agg backend: no display in containers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from proactive_rl.stages.eval.metrics import BUCKET_RANGES, BUCKETS

# (key in a checkpoint's metrics, row title, format) for the main table of report.md
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "accuracy (correct / all)", "pct"),
    ("accuracy_given_attempted", "accuracy given attempted", "pct"),
    ("f_score", "F-score", "num"),
    ("hallucination_rate", "hallucination rate (incorrect / all)", "pct"),
    ("not_attempted_rate", "not attempted", "pct"),
    ("truthfulness", "truthfulness (correct - incorrect)", "pct"),
    ("proactive_rate", "proactive block", "pct"),
    ("format_rate", "tag format ok (think + plain answer)", "pct"),
    ("think_rate", "think block", "pct"),
    ("malformed_rate", "malformed tags", "pct"),
    ("truncated_rate", "truncated (max_new_tokens)", "pct"),
    ("mean_reward", "mean reward", "num"),
    ("mean_response_tokens", "mean response tokens", "int"),
)


def _fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.3f}"


def _cell(checkpoint: dict[str, Any], key: str, kind: str, view: str = "") -> str:
    """A metric with its 95% interval where the report has one: `25.0% [18.2, 31.9]`."""
    value = checkpoint[f"metrics{view}"][key]
    interval = checkpoint.get(f"intervals{view}", {}).get(key)
    if interval is None:
        return _fmt(value, kind)
    low, high = (_fmt(v, kind).rstrip("%") for v in interval)
    return f"{_fmt(value, kind)} [{low}, {high}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(report: dict[str, Any], plots: list[str]) -> str:
    """report.md: acceptance, metric x checkpoint table, calibration buckets, categories, the RL
    curve, settings."""
    cks = report["checkpoints"]
    labels = [c["label"] for c in cks]
    out = [
        f"# Evaluation report `{report['name']}`",
        "",
        f"Run `{report['run_dir']}`, split `{report['split']}`: {report['questions']} questions x "
        f"n={report['n']} samples per checkpoint (temperature "
        f"{report['settings']['eval']['sampling']['temperature']}, max_new_tokens "
        f"{report['settings']['eval']['sampling']['max_new_tokens']}). Seeds: "
        + ", ".join(f"{k} {v}" for k, v in report["seeds"].items())
        + f". Eval wall time {report['seconds']:.0f} s"
        + "".join(
            f", {k.replace('_seconds', '')} {v:.0f} s"
            for k, v in report["training"].items()
            if k.endswith("_seconds") and v is not None
        )
        + ".",
        "",
        "## Acceptance",
        "",
    ]
    for check in report["acceptance"]:
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[check["passed"]]
        where = f" ({check['checkpoint']})" if check["checkpoint"] else ""
        out.append(f"- **{mark}** {check['check']}{where}: {check['detail']}")
    out += [
        "",
        "## Metrics",
        "",
        f"Brackets: 95% bootstrap interval (questions resampled, each with its {report['n']} "
        "samples). Graded with the recipe's substring rule; the normalised grader is below.",
        "",
    ]
    rows = [[title] + [_cell(c, k, kind) for c in cks] for k, title, kind in METRIC_ROWS]
    out += _table(["metric", *labels], rows)
    out += graders_section(cks, labels)
    out += judge_section(cks, labels, report["settings"]["eval"].get("judge"))
    out += risk_coverage_section(cks, labels)
    out += [
        "",
        "## Calibration: proactive rate by difficulty",
        "",
        "Difficulty is each checkpoint's own accuracy on the question (fraction of its n samples "
        "correct). Cells: proactive rate (questions in the bucket).",
        "",
    ]
    rows = [
        [f"{b} ({BUCKET_RANGES[b]})"]
        + [
            f"{_fmt(c['buckets'][b]['proactive_rate'], 'pct')} ({c['buckets'][b]['questions']})"
            for c in cks
        ]
        for b in BUCKETS
    ]
    rows.append(["hardest / easiest ratio"] + [_fmt(c["calibration"]["ratio"]) for c in cks])
    out += _table(["bucket", *labels], rows)
    out += base_difficulty_section(cks, labels)
    categories = sorted({name for c in cks for name in c["categories"]})
    if len(categories) > 1:
        out += [
            "",
            "## By question category",
            "",
            "Cells: accuracy / hallucination / proactive.",
            "",
        ]
        rows = [
            [name]
            + [
                " / ".join(
                    _fmt(c["categories"][name][k], "pct")
                    for k in ("accuracy", "hallucination_rate", "proactive_rate")
                )
                if name in c["categories"]
                else "–"
                for c in cks
            ]
            for name in categories
        ]
        out += _table(["category", *labels], rows)
    curve = report["training"]["curve"]
    out += ["", "## RL training curve", ""]
    if curve:
        w = curve["window"]
        out += [
            f"{len(curve['steps'])} steps logged in logs/grpo/metrics.jsonl. Mean reward: first "
            f"{w} steps {_fmt(curve['reward_first'])}, last {w} steps {_fmt(curve['reward_last'])}"
            f"; proactive rate: {_fmt(curve['proactive_first'], 'pct')} -> "
            f"{_fmt(curve['proactive_last'], 'pct')}"
            + (
                " (windows overlap: fewer steps than 2x the window)"
                if curve["windows_overlap"]
                else ""
            )
            + ".",
        ]
    else:
        out.append("No GRPO metrics in this run.")
    out += ["", "## Checkpoints", ""]
    out += _table(
        ["label", "spec", "path", "eval seconds"],
        [[c["label"], c["spec"], f"`{c['path']}`", f"{c['seconds']:.1f}"] for c in cks],
    )
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    out += [
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(report["settings"], indent=2, sort_keys=True, default=str),
        "```",
        "",
    ]
    return "\n".join(out)


GRADER_ROWS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("hallucination_rate", "hallucination rate"),
    ("not_attempted_rate", "not attempted"),
    ("truthfulness", "truthfulness"),
)


def base_difficulty_section(cks: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """The same table with difficulty from the base model on each question, where it ran."""
    if not all("buckets_by_base" in c for c in cks):
        return []
    rows = [
        [f"{b} ({BUCKET_RANGES[b]})"]
        + [
            f"{_fmt(c['buckets_by_base'][b]['proactive_rate'], 'pct')} "
            f"({c['buckets_by_base'][b]['questions']})"
            for c in cks
        ]
        for b in BUCKETS
    ]
    ratios = [_fmt(c["calibration_by_base"]["ratio"]) for c in cks]
    intro = (
        "The same, with difficulty from the base model's accuracy on each question: hedging "
        "where the base model fails and answering where it knows."
    )
    return ["", intro, "", *_table(["bucket", *labels], [*rows, ["hardest / easiest", *ratios]])]


def graders_section(cks: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """The two graders side by side: the recipe's substring rule and the normalised grader."""
    if not all("metrics_normalised" in c for c in cks):
        return []
    out = [
        "",
        "## Two graders",
        "",
        "substring: the recipe's rule (kept for comparability; gamed by short truths and "
        "candidate lists). normalised: case, accents, punctuation, articles and number formats "
        "normalised, whole words, a single answer (shared/grading.py).",
        "",
    ]
    rows = []
    for key, title in GRADER_ROWS:
        for view, name in (("", "substring"), ("_normalised", "normalised")):
            rows.append([f"{title} ({name})"] + [_cell(c, key, "pct", view) for c in cks])
    return out + _table(["metric", *labels], rows)


def judge_section(cks: list[dict[str, Any]], labels: list[str], judge: str | None) -> list[str]:
    """The LLM judge's rates and its agreement with the normalised grader."""
    if not all("judge" in c for c in cks):
        return []
    out = [
        "",
        f"## LLM judge (`{judge}`)",
        "",
        "SimpleQA's rubric, graded by the judge model over the answers it gave a verdict for; "
        "agreement and Cohen's kappa are with the normalised grader.",
        "",
    ]

    def rate(c: dict[str, Any], key: str) -> str:
        metrics = c["judge"]["metrics"]
        return _fmt(metrics[key], "pct") if metrics else "–"

    rows = [[title] + [rate(c, key) for c in cks] for key, title in GRADER_ROWS]
    rows += [
        ["graded / no verdict"]
        + [
            f"{c['judge']['agreement']['graded']} / {c['judge']['agreement']['unparsed']}"
            for c in cks
        ],
        ["agreement"] + [_fmt(c["judge"]["agreement"]["agreement"], "pct") for c in cks],
        ["Cohen's kappa"] + [_fmt(c["judge"]["agreement"]["kappa"]) for c in cks],
    ]
    return out + _table(["metric", *labels], rows)


def risk_coverage_section(cks: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Selective answering: the area under each checkpoint's risk-coverage curve and the
    operating point it chose."""
    if not all("risk_coverage" in c for c in cks):
        return []
    out = [
        "",
        "## Selective answering (risk-coverage)",
        "",
        "Ranking questions by the checkpoint's own accuracy on them, answering only the top "
        "fraction gives the curve in risk_coverage.png; its area is the mean accuracy over all "
        "coverages (1 = knows exactly what it knows). Operating point: the fraction of responses "
        "the model attempted and its accuracy on them.",
        "",
    ]
    rows = [
        ["curve area"] + [_fmt(c["risk_coverage"]["area"]) for c in cks],
        ["attempted (coverage)"]
        + [_fmt(c["risk_coverage"]["operating_point"]["coverage"], "pct") for c in cks],
        ["accuracy when attempting"]
        + [_fmt(c["risk_coverage"]["operating_point"]["accuracy"], "pct") for c in cks],
    ]
    return out + _table(["", *labels], rows)


def write_plots(report: dict[str, Any], folder: Path) -> list[str]:
    """grades.png, proactive_by_difficulty.png and (with GRPO logs) rl_curves.png; returns the
    file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cks = report["checkpoints"]
    labels = [c["label"] for c in cks]
    written = []

    fig, ax = plt.subplots(figsize=(min(max(5.0, 1.2 * len(cks) + 2), 20.0), 4))
    bottom = [0.0] * len(cks)
    for key, color in (
        ("accuracy", "#2a9d8f"),
        ("hallucination_rate", "#e76f51"),
        ("not_attempted_rate", "#8d99ae"),
    ):
        values = [c["metrics"][key] for c in cks]
        name = {"accuracy": "correct", "hallucination_rate": "incorrect"}.get(key, "not attempted")
        ax.bar(labels, values, bottom=bottom, color=color, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of responses")
    ax.set_title("Grades per checkpoint")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(folder / "grades.png", dpi=100)
    plt.close(fig)
    written.append("grades.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(cks)
    for i, c in enumerate(cks):
        xs = [b + (i - (len(cks) - 1) / 2) * width for b in range(len(BUCKETS))]
        values = [c["buckets"][b]["proactive_rate"] or 0.0 for b in BUCKETS]
        bars = ax.bar(xs, values, width=width, label=c["label"])
        # how many questions each bar stands on: a rate over 2 questions is not over 200
        counts = [c["buckets"][b]["questions"] for b in BUCKETS]
        ax.bar_label(bars, [f"{q}q" if q else "" for q in counts], fontsize=6)
    ax.set_xticks(range(len(BUCKETS)), [f"{b}\n{BUCKET_RANGES[b]}" for b in BUCKETS], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("proactive rate")
    ax.set_title("Proactive rate by difficulty (own accuracy; q = questions)")
    ax.legend(fontsize=8 if len(cks) <= 6 else 6, ncol=1 if len(cks) <= 6 else 2)
    fig.tight_layout()
    fig.savefig(folder / "proactive_by_difficulty.png", dpi=100)
    plt.close(fig)
    written.append("proactive_by_difficulty.png")

    if all("risk_coverage" in c for c in cks):
        fig, ax = plt.subplots(figsize=(6, 4))
        for c in cks:
            rc = c["risk_coverage"]
            (line,) = ax.step(rc["coverage"], rc["accuracy"], where="post", label=c["label"])
            point = rc["operating_point"]
            ax.plot(point["coverage"], point["accuracy"], "o", color=line.get_color())
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("coverage (fraction of questions answered)")
        ax.set_ylabel("accuracy of the answered")
        ax.set_title("Risk-coverage (by own group accuracy; dot: what the model did)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "risk_coverage.png", dpi=100)
        plt.close(fig)
        written.append("risk_coverage.png")

    curve = report["training"]["curve"]
    if curve:
        fig, (top, low) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
        top.plot(curve["steps"], curve["reward_mean"], marker=".", color="#264653", alpha=0.6)
        w = curve["window"]
        if len(curve["steps"]) > 2 * w:  # a moving average over the noisy per-step means
            rolling = [
                sum(curve["reward_mean"][i - w + 1 : i + 1]) / w
                for i in range(w - 1, len(curve["steps"]))
            ]
            top.plot(curve["steps"][w - 1 :], rolling, color="#e76f51", label=f"mean of {w}")
            top.legend(fontsize=8)
        top.set_ylabel("mean reward")
        top.set_title("GRPO training (rollouts of each step)")
        pro = [
            (s, v)
            for s, v in zip(curve["steps"], curve["proactive_rate"], strict=True)
            if v is not None
        ]
        if pro:
            low.plot(*zip(*pro, strict=True), marker=".", color="#e9c46a", label="proactive rate")
        acc = [
            (s, v) for s, v in zip(curve["steps"], curve["group_acc"], strict=True) if v is not None
        ]
        if acc:
            low.plot(*zip(*acc, strict=True), marker=".", color="#2a9d8f", label="accuracy")
        low.set_ylim(0, 1)
        low.set_xlabel("RL step")
        low.set_ylabel("rate")
        low.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "rl_curves.png", dpi=100)
        plt.close(fig)
        written.append("rl_curves.png")
    return written

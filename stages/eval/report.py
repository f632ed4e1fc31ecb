"""Turn the evaluation results into what a reader looks at: report.md (the PNG plots are in
plots.py, the acceptance checks in acceptance.py). Pure functions of the report dict."""

from __future__ import annotations

import json
from typing import Any

from proactive_rl.shared.rewards import used_kwargs
from proactive_rl.stages.eval.metrics import BUCKET_RANGES, BUCKETS
from proactive_rl.stages.eval.report_frontier import consistency_section, frontier_section
from proactive_rl.stages.reports import METRIC_ROWS, cell, fmt, table


def markdown(report: dict[str, Any], plots: list[str]) -> str:
    """report.md: acceptance, metric x checkpoint table, calibration buckets, categories, the RL
    curve, settings."""
    cks = report["checkpoints"]
    labels = [c["label"] for c in cks]
    out = [f"# Evaluation report `{report['name']}`", "", *summary(report), "", header(report), ""]
    out += acceptance_section(report["acceptance"])
    out += metrics_section(cks, labels, report["n"])
    out += optimum_section(cks, labels, report)
    out += frontier_section(cks)
    out += consistency_section(cks)
    out += graders_section(cks, labels)
    out += judge_section(cks, labels, report["settings"]["eval"].get("judge"))
    out += risk_coverage_section(cks, labels)
    out += calibration_section(cks, labels)
    out += base_difficulty_section(cks, labels)
    out += categories_section(cks, labels)
    out += curve_section(report["training"]["curve"])
    out += checkpoints_section(cks)
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    out += ["", "## Settings", "", "```json", _settings_json(report["settings"]), "```", ""]
    return "\n".join(out)


# Half-width of a rate's 95% interval above which the report says differences that small are
# not shown: about what 200 questions give (issue 12's size for the learning goals).
NARROW_INTERVAL = 0.05
# Fewer GRPO steps than this show the start of the reward curve, not where it levels off.
SHORT_RL_STEPS = 20
# The rates the learning goals judge against the base model (acceptance.learning_goals).
GOAL_RATES = ("accuracy", "hallucination_rate", "truthfulness")


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def summary(report: dict[str, Any]) -> list[str]:
    """The report's first two lines: what the run taught the model (from the acceptance
    checks), and what a run of its size cannot show (its widest interval, its RL steps)."""
    checks = {c["id"]: c for c in report.get("acceptance", [])}
    learned = [
        text
        for text in (
            _format_learned(checks.get("sft_format")),
            _reward_learned(checks.get("rl_reward_rises")),
            _hedging_learned(checks.get("goal_hedges_where_base_fails")),
        )
        if text
    ]
    out = [
        "- **What this run shows:** "
        + ("; ".join(learned) if learned else "nothing measured yet")
        + ".",
        "- **What it cannot show:** " + _limits(report) + ".",
    ]
    cut = truncation_warnings(report)
    return out + (["- **Read with care:** " + "; ".join(cut) + "."] if cut else [])


# A trained checkpoint whose responses are cut at the token limit this often is graded on
# fragments: the 100-step GRPO run of docs/benchmarks.md had 47% cut, half of them hedges
# graded as wrong answers, and its rates read as if it had learned to hallucinate.
TRUNCATED_WARN = 0.2


def truncation_warnings(report: dict[str, Any]) -> list[str]:
    """One phrase per trained checkpoint with more than TRUNCATED_WARN of its responses cut
    at max_new_tokens (a base model's free-form paragraphs are cut as a matter of course)."""
    limit = report.get("settings", {}).get("eval", {}).get("sampling", {}).get("max_new_tokens")
    return [
        f"{c['label']} has {_pct(c['metrics']['truncated_rate'])} of its responses cut at "
        f"max_new_tokens={limit} (over {TRUNCATED_WARN:.0%}): its rates grade cut-off answers"
        for c in report["checkpoints"]
        if c["kind"] != "base" and c["metrics"].get("truncated_rate", 0.0) > TRUNCATED_WARN
    ]


def _format_learned(check: dict[str, Any] | None) -> str | None:
    if not check or check["passed"] is None:
        return None
    sft, base = check["values"]["sft"], check["values"]["base"]
    was = f" (base {_pct(base)})" if base is not None else ""
    verb = "SFT taught the tag format" if check["passed"] else "SFT did not yet teach the format"
    return f"{verb}: {_pct(sft)} well formed{was}"


def _reward_learned(check: dict[str, Any] | None) -> str | None:
    if not check or check["passed"] is None:
        return None
    v = check["values"]
    moved = f"{v['first']:.2f} -> {v['last']:.2f}"
    if "low" in v:
        moved += f", change {v['change']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]"
    if check["passed"]:
        return f"GRPO raised the reward ({moved})"
    return f"GRPO's reward did not rise beyond its noise ({moved})"


def _hedging_learned(check: dict[str, Any] | None) -> str | None:
    if not check:
        return None
    hard, easy = check["values"]["base_hardest"], check["values"]["base_easiest"]
    if hard is None or easy is None:
        return None
    return (
        f"the final policy hedges on {_pct(hard)} of answers where the base model always fails, "
        f"{_pct(easy)} where it always succeeds"
    )


def _limits(report: dict[str, Any]) -> str:
    """What the run's size leaves open: rates whose interval is wider than NARROW_INTERVAL
    (differences from the base below it), and a GRPO curve shorter than SHORT_RL_STEPS."""
    limits = []
    final = (report.get("checkpoints") or [{}])[-1]
    intervals = [final.get("intervals", {}).get(key) for key in GOAL_RATES]
    widths = [(i[1] - i[0]) / 2 for i in intervals if i and None not in i]
    if widths and max(widths) > NARROW_INTERVAL:
        limits.append(
            f"with {report['questions']} questions x {report['n']} samples the final rates are "
            f"known to +-{100 * max(widths):.0f} points, so accuracy kept, hallucination and "
            "truthfulness against the base are not told apart from noise"
        )
    curve = (report.get("training") or {}).get("curve")
    if curve and len(curve["steps"]) < SHORT_RL_STEPS:
        limits.append(
            f"{len(curve['steps'])} GRPO steps show the reward starting to move, not where it "
            "levels off (`make bench-learning` is the longer run)"
        )
    if not limits:
        return "differences inside the 95% intervals below"
    return "; ".join(limits)


def header(report: dict[str, Any]) -> str:
    """The paragraph under the title: what was evaluated how, the seeds and the wall times."""
    sampling = report["settings"]["eval"]["sampling"]
    seeds = ", ".join(f"{k} {v}" for k, v in report["seeds"].items())
    training = "".join(
        f", {k.replace('_seconds', '')} {v:.0f} s"
        for k, v in report["training"].items()
        if k.endswith("_seconds") and v is not None
    )
    return (
        f"Run `{report['run_dir']}`, split `{report['split']}`: {report['questions']} questions x "
        f"n={report['n']} samples per checkpoint (temperature {sampling['temperature']}, "
        f"max_new_tokens {sampling['max_new_tokens']}). Seeds: {seeds}. "
        f"Eval wall time {report['seconds']:.0f} s{training}."
    )


def acceptance_section(checks: list[dict[str, Any]]) -> list[str]:
    out = ["## Acceptance", ""]
    for check in checks:
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[check["passed"]]
        where = f" ({check['checkpoint']})" if check["checkpoint"] else ""
        out.append(f"- **{mark}** {check['check']}{where}: {check['detail']}")
    return out


def metrics_section(cks: list[dict[str, Any]], labels: list[str], n: int) -> list[str]:
    """The main table: every metric of METRIC_ROWS per checkpoint, with its interval."""
    out = [
        "",
        "## Metrics",
        "",
        f"Brackets: 95% bootstrap interval (questions resampled, each with its {n} "
        "samples). Graded with the recipe's substring rule; the normalised grader is below.",
        "",
    ]
    rows = [[title] + [cell(c, k, kind) for c in cks] for k, title, kind in METRIC_ROWS]
    return out + table(["metric", *labels], rows)


def _bucket_rows(cks: list[dict[str, Any]], view: str) -> list[list[str]]:
    """Per difficulty bucket: each checkpoint's proactive rate (questions in the bucket)."""
    return [
        [f"{b} ({BUCKET_RANGES[b]})"]
        + [f"{fmt(c[view][b]['proactive_rate'], 'pct')} ({c[view][b]['questions']})" for c in cks]
        for b in BUCKETS
    ]


def calibration_section(cks: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Proactive rate per difficulty bucket, difficulty by each checkpoint's own accuracy."""
    out = [
        "",
        "## Calibration: proactive rate by difficulty",
        "",
        "Difficulty is each checkpoint's own accuracy on the question (fraction of its n samples "
        "correct). Cells: proactive rate (questions in the bucket).",
        "",
    ]
    rows = _bucket_rows(cks, "buckets")
    rows.append(["hardest / easiest ratio"] + [fmt(c["calibration"]["ratio"]) for c in cks])
    return out + table(["bucket", *labels], rows)


def categories_section(cks: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Accuracy / hallucination / proactive per question category, when there are several."""
    categories = sorted({name for c in cks for name in c["categories"]})
    if len(categories) <= 1:
        return []
    out = ["", "## By question category", "", "Cells: accuracy / hallucination / proactive.", ""]

    def rates(c: dict[str, Any], name: str) -> str:
        if name not in c["categories"]:
            return "–"
        keys = ("accuracy", "hallucination_rate", "proactive_rate")
        return " / ".join(fmt(c["categories"][name][k], "pct") for k in keys)

    rows = [[name] + [rates(c, name) for c in cks] for name in categories]
    return out + table(["category", *labels], rows)


def curve_section(curve: dict[str, Any] | None) -> list[str]:
    """The RL curve's first and last windows (logs/grpo/metrics.jsonl)."""
    out = ["", "## RL training curve", ""]
    if not curve:
        return out + ["No GRPO metrics in this run."]
    w = curve["window"]
    overlap = (
        " (windows overlap: fewer steps than 2x the window)" if curve["windows_overlap"] else ""
    )
    return out + [
        f"{len(curve['steps'])} steps logged in logs/grpo/metrics.jsonl. Mean reward: first "
        f"{w} steps {fmt(curve['reward_first'])}, last {w} steps {fmt(curve['reward_last'])}"
        f"; proactive rate: {fmt(curve['proactive_first'], 'pct')} -> "
        f"{fmt(curve['proactive_last'], 'pct')}{overlap}.",
    ]


def checkpoints_section(cks: list[dict[str, Any]]) -> list[str]:
    """Where each checkpoint came from, how long its evaluation took and, when an earlier
    evaluation sampled its responses (sample_cache), where they were kept."""
    rows = [
        [
            c["label"],
            c["spec"],
            f"`{c['path']}`",
            f"{c['seconds']:.1f}",
            f"kept in `{c['responses_kept_in']}`" if c.get("responses_kept_in") else "sampled",
        ]
        for c in cks
    ]
    head = ["label", "spec", "path", "eval seconds", "responses"]
    return ["", "## Checkpoints", "", *table(head, rows)]


def _settings_json(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2, sort_keys=True, default=str)


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
    rows = _bucket_rows(cks, "buckets_by_base")
    ratios = [fmt(c["calibration_by_base"]["ratio"]) for c in cks]
    intro = (
        "The same, with difficulty from the base model's accuracy on each question: hedging "
        "where the base model fails and answering where it knows."
    )
    return ["", intro, "", *table(["bucket", *labels], [*rows, ["hardest / easiest", *ratios]])]


def optimum_section(
    cks: list[dict[str, Any]], labels: list[str], report: dict[str, Any]
) -> list[str]:
    """Each checkpoint against the best action of the reward it is scored with, at its own
    answer accuracy per question (stages/eval/optimum.py)."""
    if not all("optimum" in c for c in cks):
        return []
    eval_settings = report["settings"]["eval"]
    used = used_kwargs(eval_settings.get("reward", ""), eval_settings.get("reward_kwargs") or {})
    reward = f"`{eval_settings.get('reward')}` {json.dumps(used)}"
    threshold = cks[0]["optimum"]["threshold"] if cks else None
    where = (
        "has no single accuracy threshold (each question is judged on its own)"
        if threshold is None
        else f"asks for an answer where the accuracy is at least {fmt(threshold, 'pct')}"
    )
    out = [
        "",
        "## Against the reward's own optimum",
        "",
        f"The reward {reward}, on groups of {report['n']}, {where}: computed by scoring "
        "constructed groups with the reward itself. Each question is judged at the "
        "checkpoint's own answer accuracy (the base model's where it never answers). A rational "
        "hallucination is a wrong answer the reward asks for (answering was the best bet); a "
        "mistaken one is where hedging was; a missed answer is a hedge where answering was.",
        "",
    ]
    rows = [
        [title] + [fmt(c["optimum"][key], kind) for c in cks] for key, title, kind in OPTIMUM_ROWS
    ]
    rows.append(
        ["questions judged at own / base / no accuracy"]
        + [
            f"{c['optimum']['p_from_own']} / {c['optimum']['p_from_base']} / "
            f"{c['optimum']['p_from_none']}"
            for c in cks
        ]
    )
    return out + table(["", *labels], rows)


OPTIMUM_ROWS: tuple[tuple[str, str, str], ...] = (
    ("best_action_rate", "questions where the majority action is the best one", "pct"),
    ("reward_earned", "expected reward of its actions", "num"),
    ("reward_best", "expected reward of the best actions", "num"),
    ("rational_hallucination_rate", "rational hallucinations (of all samples)", "pct"),
    ("mistaken_hallucination_rate", "mistaken hallucinations (of all samples)", "pct"),
    ("missed_answer_rate", "missed answers (of all samples)", "pct"),
)


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
            rows.append([f"{title} ({name})"] + [cell(c, key, "pct", view) for c in cks])
    return out + table(["metric", *labels], rows)


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
        return fmt(metrics[key], "pct") if metrics else "–"

    rows = [[title] + [rate(c, key) for c in cks] for key, title in GRADER_ROWS]
    rows += [
        ["graded / no verdict"]
        + [
            f"{c['judge']['agreement']['graded']} / {c['judge']['agreement']['unparsed']}"
            for c in cks
        ],
        ["agreement"] + [fmt(c["judge"]["agreement"]["agreement"], "pct") for c in cks],
        ["Cohen's kappa"] + [fmt(c["judge"]["agreement"]["kappa"]) for c in cks],
    ]
    return out + table(["metric", *labels], rows)


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
        ["curve area"] + [fmt(c["risk_coverage"]["area"]) for c in cks],
        ["attempted (coverage)"]
        + [fmt(c["risk_coverage"]["operating_point"]["coverage"], "pct") for c in cks],
        ["accuracy when attempting"]
        + [fmt(c["risk_coverage"]["operating_point"]["accuracy"], "pct") for c in cks],
    ]
    return out + table(["", *labels], rows)

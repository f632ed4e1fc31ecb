"""The PNG plots of an evaluation report: grades, proactive rate by difficulty, risk-coverage
and (with GRPO logs) the RL curves. Imported only from eval's run(), so matplotlib (Agg
backend: no display in containers) loads only when plots are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from proactive_rl.stages.eval.metrics import BUCKET_RANGES, BUCKETS  # noqa: E402

# (key in a checkpoint's metrics, legend name, colour) of the stacked grade bars
GRADE_BARS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "correct", "#2a9d8f"),
    ("hallucination_rate", "incorrect", "#e76f51"),
    ("not_attempted_rate", "not attempted", "#8d99ae"),
)


def write_plots(report: dict[str, Any], folder: Path) -> list[str]:
    """grades.png, proactive_by_difficulty.png, risk_coverage.png (with risk-coverage curves)
    and rl_curves.png (with GRPO logs); returns the file names written."""
    cks = report["checkpoints"]
    curve = report["training"]["curve"]
    written = [grades_plot(cks, folder), proactive_plot(cks, folder)]
    if all("risk_coverage" in c for c in cks):
        written.append(risk_coverage_plot(cks, folder))
    if curve:
        written.append(rl_curves_plot(curve, folder))
    return written


def _save(fig: Figure, folder: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=100)
    plt.close(fig)
    return name


def grades_plot(cks: list[dict[str, Any]], folder: Path) -> str:
    """Stacked bars per checkpoint: correct, incorrect, not attempted."""
    labels = [c["label"] for c in cks]
    fig, ax = plt.subplots(figsize=(min(max(5.0, 1.2 * len(cks) + 2), 20.0), 4))
    bottom = [0.0] * len(cks)
    for key, name, color in GRADE_BARS:
        values = [c["metrics"][key] for c in cks]
        ax.bar(labels, values, bottom=bottom, color=color, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of responses")
    ax.set_title("Grades per checkpoint")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, folder, "grades.png")


def proactive_plot(cks: list[dict[str, Any]], folder: Path) -> str:
    """Grouped bars: each checkpoint's proactive rate per difficulty bucket."""
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
    return _save(fig, folder, "proactive_by_difficulty.png")


def risk_coverage_plot(cks: list[dict[str, Any]], folder: Path) -> str:
    """Each checkpoint's risk-coverage curve, a dot at the operating point it chose."""
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
    return _save(fig, folder, "risk_coverage.png")


def rl_curves_plot(curve: dict[str, Any], folder: Path) -> str:
    """The GRPO curve: mean reward per step above, proactive rate and accuracy below."""
    fig, (top, low) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    _reward_panel(top, curve)
    _rates_panel(low, curve)
    return _save(fig, folder, "rl_curves.png")


def _reward_panel(ax: Axes, curve: dict[str, Any]) -> None:
    steps, reward, w = curve["steps"], curve["reward_mean"], curve["window"]
    ax.plot(steps, reward, marker=".", color="#264653", alpha=0.6)
    if len(steps) > 2 * w:  # a moving average over the noisy per-step means
        rolling = [sum(reward[i - w + 1 : i + 1]) / w for i in range(w - 1, len(steps))]
        ax.plot(steps[w - 1 :], rolling, color="#e76f51", label=f"mean of {w}")
        ax.legend(fontsize=8)
    ax.set_ylabel("mean reward")
    ax.set_title("GRPO training (rollouts of each step)")


def _rates_panel(ax: Axes, curve: dict[str, Any]) -> None:
    for key, color, label in (
        ("proactive_rate", "#e9c46a", "proactive rate"),
        ("group_acc", "#2a9d8f", "accuracy"),
    ):
        logged = [(s, v) for s, v in zip(curve["steps"], curve[key], strict=True) if v is not None]
        if logged:
            ax.plot(*zip(*logged, strict=True), marker=".", color=color, label=label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("RL step")
    ax.set_ylabel("rate")
    ax.legend(fontsize=8)

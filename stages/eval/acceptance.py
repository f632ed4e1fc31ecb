"""The acceptance checks of the evaluation report: the format, curve and calibration checks of
the first learning run, and the learning goals after GRPO against the base model (issue 12: at
most 10% hallucination, at least 80% of the base's accuracy, truthfulness at least 0, hedging
where the base model fails). Pure functions of the report dict; passed is None where a
checkpoint, a bucket or the training log a check needs is missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

SFT_FORMAT_MIN = 0.95
CALIBRATION_MIN_RATIO = 3.0
# The learning goals after GRPO against the base model on the same questions (issue 12).
HALLUCINATION_MAX = 0.10
ACCURACY_KEPT_MIN = 0.80
TRUTHFULNESS_MIN = 0.0


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _last(checkpoints: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    found = [c for c in checkpoints if c["kind"] == kind]
    return max(found, key=lambda c: c["number"]) if found else None


class Check(TypedDict):
    """One acceptance check as report.json holds it."""

    id: str
    check: str  # what is checked, in words
    checkpoint: str | None  # the label of the checkpoint judged
    values: dict[str, Any]
    passed: bool | None  # None: not measured
    detail: str


def _check(
    cid: str, check: str, checkpoint: str | None, values: dict[str, Any], passed: bool | None
) -> Check:
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in values.items())
    return {
        "id": cid,
        "check": check,
        "checkpoint": checkpoint,
        "values": values,
        "passed": passed,
        "detail": shown if any(v is not None for v in values.values()) else "not measured",
    }


def _label(checkpoint: dict[str, Any] | None) -> str | None:
    return checkpoint["label"] if checkpoint else None


def _metric(checkpoint: dict[str, Any] | None, key: str) -> float | None:
    return checkpoint["metrics"][key] if checkpoint else None


def acceptance(report: dict[str, Any]) -> list[Check]:
    """The issue's acceptance checks, computed from the report where it has the numbers.
    passed is None when a checkpoint, a bucket or the training log they need is missing."""
    cks = report["checkpoints"]
    base = next((c for c in cks if c["kind"] == "base"), None)
    sft, final = _last(cks, "sft"), _last(cks, "policy")
    return [
        sft_format(sft, base),
        reward_rises(report["training"]["curve"]),
        final_calibration(final),
        hallucination_below_sft(final, sft),
        *learning_goals(base, final),
    ]


def sft_format(sft: dict[str, Any] | None, base: dict[str, Any] | None) -> Check:
    values = {"sft": _metric(sft, "format_rate"), "base": _metric(base, "format_rate")}
    return _check(
        "sft_format",
        f"after SFT, >= {SFT_FORMAT_MIN:.0%} of responses have a well-formed think block "
        "and a plain answer after the tags (base model for reference)",
        _label(sft),
        values,
        None if sft is None else values["sft"] >= SFT_FORMAT_MIN,
    )


def reward_rises(curve: dict[str, Any] | None) -> Check:
    """The GRPO curve's last window above its first: beyond the 95% interval of the change
    where the report has one, else on the means."""
    change = (curve or {}).get("reward_change")
    values = {"first": curve["reward_first"], "last": curve["reward_last"]} if curve else {}
    rises = curve["reward_improved"] if curve else None
    if change is not None:
        low, high = change["interval"]
        values.update(change=change["change"], low=low, high=high)
        rises = low > 0
    return _check(
        "rl_reward_rises",
        "over GRPO, the mean reward of the last steps exceeds that of the first steps"
        + (", beyond the 95% interval of the change (over prompts)" if change else ""),
        None,
        values,
        rises,
    )


@dataclass(frozen=True)
class HedgeRates:
    """The proactive rates on the hardest and the easiest bucket of a calibration."""

    hardest: float | None
    easiest: float | None

    @classmethod
    def of(cls, calibration: dict[str, Any]) -> HedgeRates:
        return cls(
            calibration.get("hardest_proactive_rate"), calibration.get("easiest_proactive_rate")
        )

    @property
    def passed(self) -> bool | None:
        """Hedges >= CALIBRATION_MIN_RATIO x more (and at all) on the hardest; None unmeasured."""
        hard, easy = self.hardest, self.easiest
        if hard is None or easy is None:
            return None
        return hard > 0 and hard >= CALIBRATION_MIN_RATIO * easy


def final_calibration(final: dict[str, Any] | None) -> Check:
    rates = HedgeRates.of(final["calibration"] if final else {})
    return _check(
        "final_calibration",
        f"after GRPO, the proactive rate on the hardest bucket is >= {CALIBRATION_MIN_RATIO:g}"
        "x (and above 0) the rate on the easiest bucket",
        _label(final),
        {"hardest": rates.hardest, "easiest": rates.easiest},
        rates.passed,
    )


def hallucination_below_sft(final: dict[str, Any] | None, sft: dict[str, Any] | None) -> Check:
    values = {
        "final": _metric(final, "hallucination_rate"),
        "sft": _metric(sft, "hallucination_rate"),
    }
    both = final is not None and sft is not None
    return _check(
        "final_hallucination_below_sft",
        "after GRPO, the hallucination rate is lower than after SFT alone",
        _label(final),
        values,
        values["final"] < values["sft"] if both else None,
    )


def _with_interval(checkpoint: dict[str, Any], key: str) -> dict[str, Any]:
    low, high = checkpoint.get("intervals", {}).get(key) or (None, None)
    return {"final": checkpoint["metrics"][key], "low": low, "high": high}


def learning_goals(base: dict[str, Any] | None, final: dict[str, Any] | None) -> list[Check]:
    """The goals after GRPO against the base model on the same questions: hallucination at most
    10%, accuracy at least 80% of the base's, truthfulness (correct - incorrect) at least 0.
    A goal is judged on the point estimate; the interval is shown beside it."""
    if final is None:
        return []
    label = final["label"]
    hallucination = _with_interval(final, "hallucination_rate")
    truth = _with_interval(final, "truthfulness")
    accuracy = _with_interval(final, "accuracy")
    base_accuracy = base["metrics"]["accuracy"] if base else None
    accuracy["base"] = base_accuracy
    return [
        _check(
            "goal_hallucination",
            f"after GRPO, the hallucination rate is at most {HALLUCINATION_MAX:.0%}",
            label,
            hallucination,
            hallucination["final"] <= HALLUCINATION_MAX,
        ),
        _check(
            "goal_accuracy_kept",
            f"after GRPO, accuracy is at least {ACCURACY_KEPT_MIN:.0%} of the base model's",
            label,
            accuracy,
            None
            if base_accuracy is None
            else accuracy["final"] >= ACCURACY_KEPT_MIN * base_accuracy,
        ),
        _check(
            "goal_truthfulness",
            f"after GRPO, truthfulness (correct - incorrect) is at least {TRUTHFULNESS_MIN:g}",
            label,
            truth,
            truth["final"] >= TRUTHFULNESS_MIN,
        ),
        hedges_where_base_fails(final),
    ]


def hedges_where_base_fails(final: dict[str, Any]) -> Check:
    """The calibration goal with difficulty from the base model: the final policy's proactive
    rate on the questions the base never answers correctly is >= 3x (and above 0) its rate on
    those the base always answers correctly. Unlike the policy's own difficulty, this still
    tells apart a model that hedges everywhere."""
    rates = HedgeRates.of(final.get("calibration_by_base") or {})
    return _check(
        "goal_hedges_where_base_fails",
        f"after GRPO, the proactive rate on the questions the base model never gets right is "
        f">= {CALIBRATION_MIN_RATIO:g}x (and above 0) the rate on those it always gets right",
        final["label"],
        {"base_hardest": rates.hardest, "base_easiest": rates.easiest},
        rates.passed,
    )

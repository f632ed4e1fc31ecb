"""scripts/learning_frontier.py on a constructed eval folder: its --gate goals are eval's own
(acceptance.learning_goals over metrics.summarize), so agreement that separates right from
wrong answers meets them and a confidently repeated wrong answer does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def sample(checkpoint: str, question: int, answer: str, grade: str) -> dict:
    return {
        "checkpoint": checkpoint,
        "question_index": question,
        "formal_answer": answer,
        "grade": grade,
        "grade_normalised": grade,
        "proactive": False,
        "think": True,
        "format_ok": True,
        "malformed": False,
        "truncated": False,
        "reward": 1.0 if grade == "correct" else 0.0,
        "response_tokens": 12,
    }


def eval_folder(tmp_path: Path, wrong_agree: bool) -> Path:
    """Ten questions x 4 samples: the first two known (4/4 "Paris"), eight guessed. The base
    guesses scattered answers; the policy's guesses agree when `wrong_agree`."""
    rows = []
    for label, agree in (("base", False), ("policy", wrong_agree)):
        for q in range(10):
            for i in range(4):
                if q < 2:
                    rows.append(sample(label, q, "Paris", "correct"))
                else:
                    guess = "Lyon" if agree else f"Guess {q} {i}"
                    rows.append(sample(label, q, guess, "incorrect"))
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def gate(folder: Path) -> tuple[dict, str]:
    out = folder / "summary.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/learning_frontier.py"), str(folder), "policy"]
        + ["--gate", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    goals = json.loads(out.read_text())["gate"]["goals"]
    return {g["id"]: g for g in goals}, done.stdout


def test_agreement_on_known_answers_meets_every_goal(tmp_path):
    goals, printed = gate(eval_folder(tmp_path, wrong_agree=False))
    assert {k: g["passed"] for k, g in goals.items()} == {
        "goal_accuracy_kept": True,
        "goal_hallucination": True,
        "goal_truthfulness": True,
    }
    # kept: the 8 right answers of 40, none wrong; the base's accuracy is the same 0.2
    assert goals["goal_accuracy_kept"]["values"]["final"] == 0.2
    assert goals["goal_accuracy_kept"]["values"]["base"] == 0.2
    assert goals["goal_hallucination"]["values"]["final"] == 0.0
    assert "answering only when >= 1 others agree" in printed


def test_a_repeated_wrong_answer_fails_hallucination_and_truthfulness(tmp_path):
    goals, printed = gate(eval_folder(tmp_path, wrong_agree=True))
    assert goals["goal_accuracy_kept"]["passed"] is True
    assert goals["goal_hallucination"]["passed"] is False
    assert goals["goal_hallucination"]["values"]["final"] == 0.8
    low, high = (goals["goal_hallucination"]["values"][k] for k in ("low", "high"))
    assert low <= 0.8 <= high
    assert goals["goal_truthfulness"]["values"]["final"] == -0.6
    assert "goal_hallucination not met" in printed

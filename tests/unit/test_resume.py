"""The pieces --resume relies on, one at a time: the metrics log after a crash, the test-only
crash hook, which Trainer checkpoints count as complete, and a peer that is not coming back.
The whole workers are killed and resumed in tests/stages/test_crash_resume.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from proactive_rl.shared.metrics import MetricsLogger, read_metrics
from proactive_rl.stages.sft.main import checkpoint_complete, remove_incomplete_checkpoints


def test_a_resumed_metrics_log_keeps_one_line_per_step(tmp_path):
    """Killed after logging steps 0-2 (step 3 torn mid-write); resumed at step 2: the lines of
    steps 2 and later go (they are logged again), a line says where it resumed."""
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(3):
        log.log(step, {"loss": float(step)})
    with open(log.path, "a") as fh:
        fh.write('{"loss": 3.0, "st')  # the kill came while this line was written
    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_at=2)
    assert resumed.dropped == 2 and resumed.steps() == {0, 1}
    resumed.event(2, "resume", dropped_lines=resumed.dropped)
    for step in range(2, 4):
        resumed.log(step, {"loss": float(step), "nan": float("nan")})
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records if "event" not in r] == [0, 1, 2, 3]
    assert [(r["event"], r["step"]) for r in records if "event" in r] == [("resume", 2)]
    assert records[-1]["nan"] is None  # strict JSON


def test_the_crash_hook_kills_only_at_its_named_point(tmp_path):
    code = (
        "from proactive_rl.shared.faults import crash_point\n"
        "crash_point('grpo', 'after_policy_marker', 1)\n"
        "crash_point('grpo', 'after_optimizer_save', 2)\n"
        "print('survived')\n"
    )
    for spec, returncode in [
        ("", 0),
        ("grpo:after_policy_marker:2", 0),
        ("rollout:after_policy_marker:1", 0),
        ("grpo:after_optimizer_save:2", -9),
    ]:
        env = {"PROACTIVE_CRASH_AT": spec}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
        assert proc.returncode == returncode, spec
        assert (b"survived" in proc.stdout) == (returncode == 0)


def trainer_state(step: int) -> str:
    return json.dumps({"global_step": step, "log_history": []})


# what a kill inside the Trainer's save leaves in checkpoint-4: is it complete?
CHECKPOINTS = [
    ({"model.safetensors": "w", "optimizer.pt": "o", "trainer_state.json": trainer_state(4)}, True),
    ({"model.safetensors": "w", "optimizer.pt": "o"}, False),  # killed before the state
    ({"model.safetensors": "w", "trainer_state.json": trainer_state(4)[:20]}, False),  # torn
    ({"trainer_state.json": trainer_state(2)}, False),  # another step's state
    ({}, False),  # the folder was just made
]


@pytest.mark.parametrize("files, complete", CHECKPOINTS)
def test_a_trainer_checkpoint_is_complete_once_its_state_is_written(tmp_path, files, complete):
    older = tmp_path / "checkpoint-2"
    older.mkdir()
    (older / "trainer_state.json").write_text(trainer_state(2))
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    assert checkpoint_complete(folder, 4) is complete
    remove_incomplete_checkpoints(tmp_path)
    assert folder.exists() is complete and older.exists()

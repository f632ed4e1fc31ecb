"""Run-directory claims: --resume keeps what was published, --clean deletes, and a restart of
the launch that claimed the outputs (PROACTIVE_LAUNCH_ID) continues them (shared/claims.py)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from proactive_rl.shared.claims import (
    check_claim,
    claim_outputs,
    continues_launch,
    recorded_launch,
    remove_unpublished,
    start_mode,
)
from proactive_rl.shared.errors import UserError
from proactive_rl.shared.publish import verify
from tests.unit.test_publish import published

# ---------------------------------------------------------------- remove_unpublished


def test_remove_unpublished_deletes_crash_leftovers_only(tmp_path):
    parent = tmp_path / "policies"
    published(parent / "step_000001")
    published(parent / "epoch_000002")
    for name in ("step_000003", "epoch_000004", "other_folder", ".step_000005.tmp-1-abcdef12"):
        (parent / name).mkdir(parents=True)
        (parent / name / "weights.bin").write_bytes(b"half written")
    (parent / ".plan.json.tmp-1-abcdef12").write_text("{")
    (parent / "plan.json").write_text("{}")

    remove_unpublished(parent)

    assert sorted(p.name for p in parent.iterdir()) == [
        "epoch_000002",
        "other_folder",  # not an artifact name: not ours to delete
        "plan.json",
        "step_000001",
    ]
    verify(parent / "step_000001")


def test_remove_unpublished_ignores_a_missing_folder(tmp_path):
    remove_unpublished(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


# ---------------------------------------------------------------- claim_outputs


def test_claim_outputs_accepts_missing_and_empty_outputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for resume, clean in [(False, False), (True, False), (False, True)]:
        claim_outputs([tmp_path / "missing", empty], "sft", resume=resume, clean=clean)
    assert empty.is_dir() and not (tmp_path / "missing").exists()


def _used_outputs(root: Path) -> tuple[Path, Path]:
    policies = root / "policies"
    published(policies / "step_000000")
    (policies / "step_000001").mkdir()  # crashed before its marker
    (policies / "step_000001" / "w.bin").write_bytes(b"partial")
    (policies / ".step_000002.tmp-9-deadbeef").mkdir()
    state = root / "state.json"
    state.write_text("{}")
    return policies, state


def test_claim_outputs_refuses_used_outputs(tmp_path):
    policies, state = _used_outputs(tmp_path)
    with pytest.raises(UserError) as err:
        claim_outputs([policies, state], "grpo", resume=False, clean=False)
    message = str(err.value)
    for part in ("grpo", "--resume", "--clean", str(policies), str(state)):
        assert part in message
    # refusing touches nothing
    assert (policies / "step_000001").is_dir() and state.is_file()


def test_claim_outputs_clean_deletes_outputs(tmp_path):
    policies, state = _used_outputs(tmp_path)
    claim_outputs([policies, state], "grpo", resume=False, clean=True)
    assert not policies.exists() and not state.exists()


def test_claim_outputs_resume_keeps_published_and_drops_leftovers(tmp_path):
    policies, state = _used_outputs(tmp_path)
    claim_outputs([policies, state], "grpo", resume=True, clean=False)
    assert sorted(p.name for p in policies.iterdir()) == ["step_000000"]
    verify(policies / "step_000000")
    assert state.is_file()


@pytest.mark.parametrize("used", [True, False])
def test_claim_outputs_resume_and_clean_together_is_an_error(tmp_path, used):
    outputs = list(_used_outputs(tmp_path)) if used else [tmp_path / "missing"]
    with pytest.raises(UserError, match="--resume and --clean"):
        claim_outputs(outputs, "sft", resume=True, clean=True)
    if used:
        assert (outputs[0] / "step_000001").is_dir()  # nothing was deleted


# ---------------------------------------------------------------- launches (PROACTIVE_LAUNCH_ID)

MODES = list(itertools.product([False, True], repeat=2))  # (resume, clean), both included


def launch(launch_id: str | None) -> dict[str, str]:
    return {} if launch_id is None else {"PROACTIVE_LAUNCH_ID": launch_id}


def test_a_claim_records_the_launch_and_a_refusal_records_nothing(tmp_path):
    marker = tmp_path / "launches" / "grpo.json"
    policies, state = _used_outputs(tmp_path)
    with pytest.raises(UserError):
        claim_outputs([policies, state], "grpo", False, False, marker, launch("uid-1"))
    assert not marker.exists()
    claim_outputs([policies, state], "grpo", True, False, marker, launch("uid-1"))
    assert recorded_launch(marker) == "uid-1"
    claim_outputs([policies, state], "grpo", True, False, marker, launch("uid-2"))
    assert recorded_launch(marker) == "uid-2"  # the newest claimant owns them


def test_a_claim_without_a_launch_id_drops_an_earlier_launchs_record(tmp_path):
    marker = tmp_path / "launches" / "sft.json"
    claim_outputs([tmp_path / "sft"], "sft", False, False, marker, launch("uid-1"))
    assert continues_launch(marker, launch("uid-1"))
    claim_outputs([tmp_path / "sft"], "sft", False, False, marker, launch(None))
    # a late restart of uid-1 must not take over outputs a manual start has claimed since
    assert not marker.exists() and not continues_launch(marker, launch("uid-1"))


@pytest.mark.parametrize(("resume", "clean"), MODES)
def test_a_restart_of_the_claiming_launch_continues_whatever_the_mode(
    tmp_path, caplog, resume, clean
):
    marker = tmp_path / "launches" / "grpo.json"
    policies, state = _used_outputs(tmp_path)
    claim_outputs([policies, state], "grpo", True, False, marker, launch("uid-1"))
    (policies / "step_000002").mkdir()  # the killed worker's half-written next policy
    with caplog.at_level(logging.INFO):
        mode = start_mode(marker, "grpo", resume, clean, launch("uid-1"))
    assert mode == (True, False)
    assert "restart of launch uid-1" in caplog.text and "--resume" in caplog.text
    claim_outputs([policies, state], "grpo", *mode, marker, launch("uid-1"))  # never refuses
    # progress is kept (nothing --clean'd), the crash's leftovers go as with --resume
    assert sorted(p.name for p in policies.iterdir()) == ["step_000000"] and state.is_file()


@pytest.mark.parametrize(("resume", "clean"), MODES)
@pytest.mark.parametrize(
    ("recorded", "current"),
    [("uid-1", "uid-2"), (None, "uid-2"), ("uid-1", None), (None, None)],
)
def test_any_other_start_keeps_its_mode(tmp_path, resume, clean, recorded, current):
    marker = tmp_path / "launches" / "sft.json"
    if recorded is not None:
        claim_outputs([tmp_path / "sft"], "sft", False, False, marker, launch(recorded))
    assert start_mode(marker, "sft", resume, clean, launch(current)) == (resume, clean)


def test_another_launch_is_refused_as_before_unless_its_mode_says(tmp_path):
    marker = tmp_path / "launches" / "grpo.json"
    policies, state = _used_outputs(tmp_path)
    claim_outputs([policies, state], "grpo", True, False, marker, launch("uid-1"))
    mode = start_mode(marker, "grpo", False, False, launch("uid-2"))
    with pytest.raises(UserError, match="already holds outputs"):
        claim_outputs([policies, state], "grpo", *mode, marker, launch("uid-2"))
    assert recorded_launch(marker) == "uid-1"
    mode = start_mode(marker, "grpo", False, True, launch("uid-2"))
    claim_outputs([policies, state], "grpo", *mode, marker, launch("uid-2"))
    assert not policies.exists() and recorded_launch(marker) == "uid-2"


@pytest.mark.parametrize("content", ["{", "[]", '{"launch_id": 3}', '{"launch_id": ""}'])
def test_an_unreadable_record_is_no_launch(tmp_path, content):
    marker = tmp_path / "launches" / "eval.json"
    marker.parent.mkdir()
    marker.write_text(content)
    assert recorded_launch(marker) is None
    assert start_mode(marker, "eval", False, False, launch("uid-1")) == (False, False)


def test_an_empty_launch_id_is_none(tmp_path):
    marker = tmp_path / "launches" / "sft.json"
    claim_outputs([tmp_path / "sft"], "sft", False, False, marker, launch("  "))
    assert not marker.exists()


def test_check_claim_refuses_as_claim_outputs_would_and_touches_nothing(tmp_path):
    policies, state = _used_outputs(tmp_path)
    with pytest.raises(UserError, match="already holds outputs"):
        check_claim([policies, state], "grpo", False, False)
    with pytest.raises(UserError, match="--resume and --clean"):
        check_claim([policies, state], "grpo", True, True)
    check_claim([policies, state], "grpo", False, True)  # --clean would delete: no refusal
    check_claim([policies, state], "grpo", True, False)
    assert (policies / "step_000001").is_dir() and state.is_file()

"""Run-directory claims: --resume keeps what was published, --clean deletes (shared/claims.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proactive_rl.shared.claims import claim_outputs, remove_unpublished
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

"""A worker's status file and how a consumer watches it (shared/peers.py): every write carries
the process's `boot` and a new `seq`; `PeerWatch` takes the baseline at our start and notes, on
our own clock, when a heartbeat changed; file ages come from the volume's clock. The verdicts
and the wait are tests/unit/test_peers.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proactive_rl.shared.peers import (
    FAILURE_GRACE_S,
    PeerStatus,
    PeerWatch,
    Seen,
    boot_id,
    file_ages,
    read_peer_status,
    worker_status,
    write_status,
)
from proactive_rl.shared.publish import read_json, write_json_atomic


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def peer_writes(path: Path, state: str, boot: str, seq: int, skew: float = 0.0, **fields) -> None:
    """A status file as another process writes it, its clock `skew` seconds off ours."""
    write_json_atomic(
        path,
        {"state": state, "boot": boot, "seq": seq, "host": "peer", "pid": 1,
         "time": time.time() + skew, **fields},
    )  # fmt: skip


def backdate(path: Path, seconds: float) -> None:
    """The file as written `seconds` ago (by the volume's clock)."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


# ---------------------------------------------------------------- writing


def test_every_write_carries_this_process_boot_and_a_new_seq(tmp_path):
    path = tmp_path / "status" / "grpo.json"
    write_status(path, "running")
    first = read_json(path)
    write_status(path, "failed", error="boom", peer_caused=True)
    second = read_json(path)
    assert first["boot"] == second["boot"] == boot_id()
    assert isinstance(second["seq"], int) and second["seq"] > first["seq"]
    assert {"time", "host", "pid"} <= set(second)  # for people reading the file
    expected = PeerStatus("failed", (boot_id(), second["seq"]), "boom", True)
    assert read_peer_status(path) == expected
    path.write_text('{"state": "fail')  # torn write by a foreign tool
    assert read_peer_status(path) == PeerStatus()
    assert read_peer_status(None) is None
    assert read_peer_status(tmp_path / "never.json") is None


def test_another_process_has_another_boot(tmp_path):
    path = tmp_path / "rollout.json"
    code = (
        "import sys; from pathlib import Path; from proactive_rl.shared.peers import write_status;"
        "write_status(Path(sys.argv[1]), 'running')"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert read_json(path)["boot"] != boot_id()


def test_worker_status_running_then_done(tmp_path):
    path = tmp_path / "status" / "rollout.json"
    with worker_status(path, plan_id="p1"):
        during = read_json(path)
    after = read_json(path)

    assert during["state"] == "running" and during["plan_id"] == "p1"
    assert after["state"] == "done" and after["plan_id"] == "p1"
    assert after["pid"] == os.getpid() and after["boot"] == during["boot"]
    assert after["seq"] > during["seq"]


def test_worker_status_failed_records_error_and_reraises(tmp_path):
    path = tmp_path / "grpo.json"
    with pytest.raises(ValueError, match="boom 42"):
        with worker_status(path, plan_id="p1"):
            assert read_json(path)["state"] == "running"
            raise ValueError("boom 42")
    status = read_json(path)
    assert status["state"] == "failed"
    assert status["error"] == "ValueError: boom 42"
    assert status["plan_id"] == "p1"


def test_worker_status_refreshes_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr("proactive_rl.shared.peers.HEARTBEAT_S", 0.05)
    path = tmp_path / "status.json"
    with worker_status(path):
        first = read_json(path)["seq"]
        # a new beat comes within 0.05 s; a loaded machine may run the thread late: wait for
        # it (as long as it takes, up to a limit no beat interval comes near)
        deadline = time.monotonic() + 60
        while read_json(path)["seq"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_json(path)["state"] == "running"
        assert read_json(path)["seq"] > first
    assert read_json(path)["state"] == "done"


# ---------------------------------------------------------------- watching


def test_file_ages_are_read_on_the_volume_clock(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text("{}")
    new.write_text("{}")
    written = new.stat().st_mtime
    os.utime(old, (written - 100, written - 100))
    ages = file_ages([old, new, tmp_path / "gone.json"])
    assert 100 <= ages[old] < 110 and 0 <= ages[new] < 10
    assert set(ages) == {old, new}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "old.json"]  # no probe left


def test_a_watch_notes_news_and_how_long_nothing_changed(tmp_path):
    grpo, rollout = tmp_path / "grpo.json", tmp_path / "rollout.json"
    peer_writes(grpo, "running", "old", 4)
    clock = Ticks()
    watch = PeerWatch(tmp_path, clock=clock)
    clock.now = 30
    assert watch.look(grpo) == (PeerStatus("running", ("old", 4)), Seen(("old", 4), None, 30, 30))
    assert watch.news(grpo) is None and watch.news(rollout) is None
    peer_writes(grpo, "running", "old", 5)  # its next heartbeat: it is alive
    clock.now = 31
    assert watch.news(grpo) == PeerStatus("running", ("old", 5))
    clock.now = 40
    assert watch.look(grpo)[1].unchanged_for == 9
    peer_writes(rollout, "running", "new", 1)  # a worker that was not there at our start
    assert watch.news(rollout) == PeerStatus("running", ("new", 1))
    rollout.write_text("{")  # an unreadable read does not count as a change
    clock.now = 50
    assert watch.look(rollout)[1].unchanged_for == 10


def test_a_watch_keeps_the_age_of_a_failure_before_our_start(tmp_path):
    peer_writes(tmp_path / "a.json", "failed", "x", 1)
    peer_writes(tmp_path / "b.json", "failed", "y", 1)
    backdate(tmp_path / "b.json", 100)
    peer_writes(tmp_path / "c.json", "failed", "z", 1, peer_caused=True)
    watch = PeerWatch(tmp_path)
    ages = {name: watch.look(tmp_path / f"{name}.json")[1].age_at_start for name in "abc"}
    assert ages["a"] < FAILURE_GRACE_S < 100 <= ages["b"]
    assert ages["c"] is None  # a failure for want of us never counts: no probe needed


@pytest.mark.parametrize("stage", ["grpo", "rollout"])
def test_the_peer_limits_are_bounded(stage):
    from pydantic import ValidationError

    from proactive_rl.stages.grpo.config import GrpoConfig
    from proactive_rl.stages.rollout.config import RolloutConfig

    config = {"grpo": GrpoConfig, "rollout": RolloutConfig}[stage]
    assert config().peer_start_timeout == 900 and config().peer_quiet_timeout == 120
    for field, value in [
        ("peer_start_timeout", 5),  # not above the heartbeat: a live peer would look absent
        ("peer_start_timeout", 86401),
        ("peer_quiet_timeout", 10),
    ]:
        with pytest.raises(ValidationError, match=field):
            config(**{field: value})

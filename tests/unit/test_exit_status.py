"""The CLI's exit status (stages/cli.py): 2 for a problem to fix, 75 (EX_TEMPFAIL) for a worker
that stopped for want of its peer, so Kubernetes restarts the run instead of failing it."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.peers import PeerFailed, WaitTimeout
from proactive_rl.stages.cli import group, main
from tests.conftest import proactive


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (PeerFailed("the grpo worker failed: out of memory"), 75),
        (WaitTimeout("no policy version >= 3 after 3600 s"), 75),
        (UserError("n=1: a group needs at least 2 responses"), 2),
    ],
)
def test_the_exit_status_says_whether_a_restart_can_help(monkeypatch, capsys, error, status):
    def fail() -> None:
        raise error

    monkeypatch.setitem(group.commands, "fails", click.Command("fails", callback=fail))
    monkeypatch.setattr(sys, "argv", ["proactive", "fails"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == status
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_rollout_worker_whose_trainer_never_comes_exits_75(workdir):
    """The real CLI: no grpo ever publishes a plan, so the wait for it times out."""
    proc = proactive(
        "rollout",
        "--run-dir",
        "run",
        "--set",
        "wait_timeout=1",
        cwd=workdir,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 75, proc.stderr[-2000:]
    assert "error: " in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("status", [75, 2])
def test_under_torchrun_the_failed_process_status_is_the_exit_status(tmp_path, status):
    """torchrun itself exits 1 whatever its processes did; engine/torchrun.py passes on the
    status of the process that failed first (here rank 1; rank 0 is stopped by torchrun)."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, sys, time\n"
        f"sys.exit({status}) if os.environ['RANK'] == '1' else time.sleep(60)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "proactive_rl.engine.torchrun", "--standalone"]
        + ["--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == status, proc.stderr[-2000:]

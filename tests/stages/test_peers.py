"""A worker that fails at start-up, before its run has begun (a config the validation refuses, a
reward file that does not load), stops its peer within seconds instead of leaving it waiting for
its whole wait_timeout (an hour by default): the failure reaches the peer through the status
file, written from the first line of the command on. A peer stopped for want of its peer exits
75 (EX_TEMPFAIL: a restart of the run may succeed), the worker at fault 2."""

from __future__ import annotations

import json
import subprocess
import threading
import time

from proactive_rl.shared.paths import RunPaths
from tests.conftest import proactive, start

# Far beyond what the test allows: a peer that waited for its timeout would fail the test.
WAIT = ("--set", "wait_timeout=600")
# From the failing worker's exit to its peer's exit: seconds when idle, but on a loaded machine
# the peer may still be importing torch or building its model when the worker fails (a run
# beside a benchmark took over 90 s). The bound only separates noticing the failure from
# waiting out the wait_timeout; the message each test reads says why the peer stopped.
DETECT_S = 300.0
EX_TEMPFAIL = 75  # stopped for want of the peer (stages/cli.py)


def finish_both(failing, peer) -> tuple[str, str, float]:
    """Wait for both; returns their outputs and the seconds between the two exits."""
    while failing.poll() is None:
        time.sleep(0.05)
    failed_at = time.monotonic()
    out_failing, _ = failing.communicate()
    out_peer, _ = peer.communicate(timeout=DETECT_S + 60)
    seconds = time.monotonic() - failed_at
    print(f"the peer exited {seconds:.2f} s after the failing worker")
    return out_failing, out_peer, seconds


def test_grpo_refusing_its_config_stops_a_waiting_rollout(workdir, tiny_model):
    run = workdir / "checkpoints" / "run"
    common = ["--run-dir", str(run)]
    rollout = start("rollout", *common, *WAIT, cwd=workdir)
    time.sleep(1.0)  # the rollout worker is up and waiting for the plan
    grpo = start("grpo", *common, "--set", f"init_model={tiny_model}", "--set", "n=0", cwd=workdir)
    out_grpo, out_rollout, seconds = finish_both(grpo, rollout)
    assert grpo.returncode != 0 and "n" in out_grpo
    assert rollout.returncode == EX_TEMPFAIL, out_rollout
    assert "the grpo worker failed while we waited for the RL plan" in out_rollout
    assert "Traceback" not in out_rollout
    assert seconds < DETECT_S, f"the rollout worker exited {seconds:.1f} s after grpo"
    status = json.loads(RunPaths(run).status("grpo").read_text())
    assert status["state"] == "failed" and "n" in status["error"]


def test_a_reward_file_that_does_not_load_stops_grpo(workdir, tiny_model):
    proactive("prep", "--set", "max_rl_rows=12", cwd=workdir)
    (workdir / "broken_reward.py").write_text("import no_such_module_here\n")
    run = workdir / "checkpoints" / "run"
    common = ["--run-dir", str(run)]
    grpo = start(
        "grpo", *common, *WAIT, "--set", f"init_model={tiny_model}", "--set", "n=4",
        "--set", "prompts_per_step=3", cwd=workdir,
    )  # fmt: skip
    rollout = start("rollout", *common, "--set", "reward=broken_reward.py:score", cwd=workdir)
    out_rollout, out_grpo, seconds = finish_both(rollout, grpo)
    assert rollout.returncode == 2 and "broken_reward.py" in out_rollout, out_rollout
    assert grpo.returncode == EX_TEMPFAIL, out_grpo
    assert "the rollout worker failed while we waited for rollouts" in out_grpo
    assert "broken_reward.py" in out_grpo  # the peer's own message says what went wrong
    # grpo first builds its model and publishes policy 0, then notices at its first wait
    assert seconds < DETECT_S + 30, f"grpo exited {seconds:.1f} s after the rollout worker"


def test_a_refused_second_worker_leaves_a_running_one_alone(tmp_path):
    """A second instance refused at start (here: its config) must not mark the running
    worker, which owns the status file and heartbeats it, as failed."""
    from proactive_rl.shared.peers import failure_reported, write_status

    status = tmp_path / "status" / "rollout.json"
    status.parent.mkdir()
    write_status(status, "running")
    data = json.loads(status.read_text())
    data["boot"] = "another process"  # another process's heartbeat
    status.write_text(json.dumps(data))
    try:
        with failure_reported(status):
            raise ValueError("refused")
    except ValueError:
        pass
    assert json.loads(status.read_text())["state"] == "running"
    status.unlink()
    try:
        with failure_reported(status):
            raise ValueError("bad config")
    except ValueError:
        pass
    failed = json.loads(status.read_text())
    assert failed["state"] == "failed" and "bad config" in failed["error"]


def read_lines(proc: subprocess.Popen, lines: list[str], waiting: threading.Event) -> None:
    """Collect the worker's output; `waiting` is set once it has started its engine (then it
    waits for the plan)."""
    for line in proc.stdout:
        lines.append(line)
        if "generation backend" in line:
            waiting.set()
    waiting.set()  # it exited


def test_a_quiet_peer_is_taken_for_dead_after_the_configured_limit(workdir):
    """A peer killed without a word (kill -9, out of memory) stops heartbeating; the waiting
    worker gives up after `peer_quiet_timeout` seconds (default 120) without a new heartbeat,
    on its own clock, naming it."""
    from proactive_rl.shared.peers import write_status

    run = workdir / "checkpoints" / "run"
    status = RunPaths(run).status("grpo")
    rollout = start(
        "rollout", "--run-dir", str(run), *WAIT, "--set", "peer_quiet_timeout=12", cwd=workdir
    )
    lines: list[str] = []
    waiting = threading.Event()
    reader = threading.Thread(target=read_lines, args=(rollout, lines, waiting), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    beats = 0
    # a live grpo while the rollout worker starts and then waits, then silence
    while (not waiting.is_set() or beats < 3) and time.monotonic() < deadline:
        write_status(status, "running")
        beats += waiting.is_set()
        time.sleep(1.0)
    started = time.monotonic() - 1.0  # since the last heartbeat
    rollout.wait(timeout=120)
    seconds = time.monotonic() - started
    reader.join(timeout=10)
    out = "".join(lines)
    assert rollout.returncode == EX_TEMPFAIL, out
    assert "the grpo worker went quiet (no heartbeat for" in out
    assert 12 <= seconds < 12 + DETECT_S, f"noticed after {seconds:.1f} s"


def test_the_quiet_limit_must_exceed_the_heartbeat(workdir):
    proc = proactive("rollout", "--set", "peer_quiet_timeout=5", cwd=workdir, check=False)
    assert proc.returncode == 2 and "peer_quiet_timeout" in proc.stderr
    assert "greater than 10" in proc.stderr

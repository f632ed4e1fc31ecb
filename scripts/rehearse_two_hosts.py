"""Two hosts rehearsed on one machine: the JobSet's grpo container on two Docker "hosts"
(GRPO_NODES=2: torchrun --nnodes=2 rendezvous over the network, gloo, DeepSpeed ZeRO-2 on the
CPU) beside its rollout worker, after its preflight, prep and sft, in a temporary workspace; each
container rendered from deploy/k8s_gen.py and started as the kubelet would (rehearsal_pods.py).
What it runs, the figures and what it does not prove: docs/multinode.md.

    .venv/bin/python scripts/rehearse_two_hosts.py [--keep] [--out figures.json]
    .venv/bin/pytest -m docker tests/e2e/test_two_hosts.py     # CI's part of it

Scenarios: an uninterrupted run on two trainer containers (the reference) and on one container
with two processes (the same world size); a trainer `docker kill`ed after policy 1 and the
whole launch restarted with the same PROACTIVE_LAUNCH_ID (a JobSet restart); trainer 0's clock
10 minutes ahead (libfaketime) with the rollout container killed while the trainers wait for
it, then that launch restarted. Needs Docker (PATH=/usr/bin first) and the images
(scripts/build-images.sh).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rehearsal_pods import (  # noqa: E402  (scripts/ is not a package)
    DOCKER,
    Host,
    RehearsalError,
    chown_tree,
    docker,
    docker_time,
    host,
    job_names,
    logs,
    render,
    state,
)
from stage_table import K8S_KNOBS, KNOBS  # noqa: E402  (deploy/, on the path since rehearsal_pods)

from proactive_rl.shared.faults import CRASH_ENV  # noqa: E402

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
STEPS = 3  # GRPO steps of every rehearsal run
QUIET_S = 20  # peer_quiet_timeout of the rehearsal: a killed peer is noticed after it

# Smoke-size knobs (scripts/smoke.env's sizes, smaller still): the tiny model, 4 prompts a step
# in groups of 2, DeepSpeed ZeRO-2 over gloo; the transformers engine (vLLM's CPU build takes
# ~30 s more to start and is the container smoke's subject, not this one's).
GRPO_SETTINGS = (
    "--set strategy=zero2 --set prompts_per_step=4 --set mini_batch_prompts=4 "
    f"--set micro_batch_size=4 --set max_steps={STEPS} --set peer_quiet_timeout={QUIET_S} "
    "--set learning_rate=1e-4"
)
SMOKE_KNOBS = {
    "RUN_NAME": "rehearsal",
    "BASE_MODEL_PATH": "builtin:tiny",
    "NUM_SFT_SAMPLES": "8",
    "SFT_EPOCHS": "1",
    "RL_ROLLOUTS": "2",
    "RL_EPOCHS": "1",
    "PREP_ARGS": "--set max_rl_rows=20",
    "SFT_ARGS": "--set max_length=128",
    "ROLLOUT_ARGS": "--set sampling.max_new_tokens=16 --set backend=transformers "
    f"--set peer_quiet_timeout={QUIET_S}",
    "GRPO_ARGS": GRPO_SETTINGS,
    "GRPO_NODES": "2",
    "TRAIN_GPUS_PER_POD": "1",  # the cpu flavour requests no GPU: one process per pod
    "ROLLOUT_GPUS_PER_POD": "0",
}


# ---------------------------------------------------------------- launches


def knobs_for(run_name: str, **overrides: str) -> dict[str, str]:
    """The knobs ConfigMap of a rehearsal run: the defaults, the smoke sizes, `overrides`."""
    return {**KNOBS, **K8S_KNOBS, **SMOKE_KNOBS, "RUN_NAME": run_name, **overrides}


def pod_count(job: str, knobs: dict[str, str]) -> int:
    """Pods of a replicatedJob: the knob that counts them (the overlay's shape sets the Job's
    parallelism from it), else 1."""
    counts = {"rollout": "ROLLOUT_WORKERS", "grpo": "GRPO_NODES"}
    return int(knobs[counts[job]]) if job in counts else 1


def run_before_rl(
    h: Host, knobs: dict[str, str], launch_id: str, skip: tuple[str, ...] = ()
) -> dict[str, float]:
    """Every replicatedJob before rollout || grpo (preflight, prep, sft), one after the other
    as `dependsOn: Complete` chains them, but those in `skip`; returns each one's seconds."""
    seconds = {}
    for job in job_names(knobs):
        if job in ("rollout", "grpo", "eval", *skip):
            continue
        started = time.monotonic()
        name = h.start(render(job, 0, knobs, launch_id, h.prefix))
        if h.wait(name, timeout=600) != 0:
            raise RehearsalError(f"{job} failed:\n{logs(name)}")
        seconds[job] = time.monotonic() - started
    return seconds


@dataclass
class Launch:
    """rollout || grpo of one launch: the containers of each job, by pod index."""

    host: Host
    knobs: dict[str, str]
    launch_id: str
    pods: dict[str, list[str]]
    started: float  # time.time() when the first container was started

    @property
    def names(self) -> list[str]:
        return [name for names in self.pods.values() for name in names]

    def wait_all(self, timeout: float = 600) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        return {n: self.host.wait(n, max(deadline - time.monotonic(), 1)) for n in self.names}

    def stop(self) -> None:
        """Every container of the launch stopped (SIGTERM, then SIGKILL after 10 s), as the
        JobSet deletes a failed attempt's pods before it creates the next."""
        running = [n for n in self.names if state(n)["Running"]]
        if running:
            docker("stop", "-t", "10", *running)


def start_rl(
    h: Host,
    knobs: dict[str, str],
    launch_id: str,
    tag: str,
    extra_env: dict[tuple[str, int], dict[str, str]] | None = None,
) -> Launch:
    """Start the rollout workers and the grpo nodes of a launch side by side (their Jobs both
    depend on sft only); `extra_env[(job, index)]` adds variables to one container (the fake
    clock)."""
    pods: dict[str, list[str]] = {}
    started = time.time()
    for job in ("rollout", "grpo"):
        for index in range(pod_count(job, knobs)):
            spec = render(job, index, knobs, launch_id, f"{h.prefix}-{tag}")
            pods.setdefault(job, []).append(h.start(spec, (extra_env or {}).get((job, index))))
    return Launch(h, knobs, launch_id, pods, started)


# libfaketime 0.9.10 (Debian 12) and Python 3.11 cannot both keep time.sleep and timed waits
# working: a faked CLOCK_MONOTONIC makes threading waits last the offset longer (sem_clockwait
# is not intercepted; libfaketime issue 390), and with FAKETIME_DONT_FAKE_MONOTONIC its
# clock_nanosleep(TIMER_ABSTIME) passes the kernel a negative time, so time.sleep raises EINVAL
# (issue 426). This shim, preloaded first, sends monotonic sleeps straight to the kernel.
SLEEP_FIX = r"""#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem) {
    if (clock == CLOCK_MONOTONIC)
        return syscall(SYS_clock_nanosleep, clock, flags, req, rem) == 0 ? 0 : errno;
    int (*next)(clockid_t, int, const struct timespec *, struct timespec *) =
        dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(clock, flags, req, rem);
}
"""
SLEEP_FIX_SO = "/workspace/.faketime/sleep_fix.so"


def faked_clock(offset: str = "+10m") -> dict[str, str]:
    """The container's wall clock `offset` ahead, as on a host whose clock is off: libfaketime
    (in the base image) for CLOCK_REALTIME only. The monotonic clock and file times stay real:
    another host's clock skew moves neither (a file's mtime is stamped by the file system)."""
    return {
        "LD_PRELOAD": f"{SLEEP_FIX_SO} {FAKETIME_LIB}",
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "NO_FAKE_STAT": "1",
    }


def wait_until(test: Callable[[], bool], launch: Launch, what: str, timeout: float = 600) -> None:
    """Poll `test` until it holds; fail early, with the logs, if a container of the launch
    has exited with an error meanwhile."""
    deadline = time.monotonic() + timeout
    while not test():
        for name in launch.names:
            s = state(name)
            if not s["Running"] and s["ExitCode"] != 0:
                raise RehearsalError(
                    f"waiting for {what}: {name} exited {s['ExitCode']}:\n{logs(name)}"
                )
        if time.monotonic() > deadline:
            raise RehearsalError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.2)


def policy_published(run_dir: Path, version: int) -> bool:
    return (run_dir / "policies" / f"step_{version:06d}" / "STABLE.json").is_file()


def first_seen(path: Path, launch: Launch, timeout: float = 300) -> float:
    """time.time() when `path` first exists (polled every 50 ms)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or not any(state(n)["Running"] for n in launch.names):
            raise RehearsalError(f"{path} did not appear:\n" + "".join(map(logs, launch.names)))
        time.sleep(0.05)
    return time.time()


def log_time(name: str, pattern: str) -> float | None:
    """When Docker received the first log line of `name` that matches `pattern`."""
    out = subprocess.run([DOCKER, "logs", "-t", name], capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        if re.search(pattern, text):
            return docker_time(stamp)
    return None


# ---------------------------------------------------------------- what a run left


def tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """The tensors of a safetensors file, raw (dtype, shape, bytes): read with the standard
    library, so the comparison needs neither torch nor numpy."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header.pop("__metadata__", None)
    body = data[8 + size :]
    return {
        name: (t["dtype"], t["shape"], body[t["data_offsets"][0] : t["data_offsets"][1]])
        for name, t in header.items()
    }


def max_abs_diff(a: bytes, b: bytes, dtype: str) -> float | None:
    if dtype != "F32":
        return None
    from array import array

    x, y = array("f", a), array("f", b)
    return max((abs(p - q) for p, q in zip(x, y, strict=True)), default=0.0)


def step_lines(run_dir: Path) -> list[dict[str, Any]]:
    """grpo's metrics lines of steps (event lines, such as a resume, left out)."""
    text = (run_dir / "logs" / "grpo" / "metrics.jsonl").read_text()
    return [r for r in map(json.loads, text.splitlines()) if "event" not in r]


def versions(run_dir: Path) -> list[int]:
    folders = (run_dir / "policies").glob("step_*/STABLE.json")
    return sorted(int(p.parent.name.removeprefix("step_")) for p in folders)


def differences(run_dir: Path, reference: Path) -> list[str]:
    """How a run differs from `reference`: its published policies, its step metrics (timings
    aside) and the final policy's weights, bit for bit. Empty: the same run."""
    found = []
    if versions(run_dir) != versions(reference):
        found.append(f"policies {versions(run_dir)} vs {versions(reference)}")
    ours, theirs = step_lines(run_dir), step_lines(reference)
    if [r["step"] for r in ours] != [r["step"] for r in theirs]:
        found.append(f"metric steps {[r['step'] for r in ours]} vs {[r['step'] for r in theirs]}")
    for mine, other in zip(ours, theirs, strict=False):
        keys = [k for k in other if k != "time" and not k.startswith("time/")]
        bad = [k for k in keys if mine.get(k) != other[k]]
        if bad:
            found.append(f"step {other['step']} metrics differ: {bad[:6]}")
    last = max(versions(reference), default=0)
    a = tensors(run_dir / "policies" / f"step_{last:06d}" / "model.safetensors")
    b = tensors(reference / "policies" / f"step_{last:06d}" / "model.safetensors")
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b or a[name][:2] != b[name][:2]:
            found.append(f"policy {last}: tensor {name} missing or of another shape")
        elif a[name][2] != b[name][2]:
            found.append(
                f"policy {last}: {name} differs by up to "
                f"{max_abs_diff(a[name][2], b[name][2], a[name][0])}"
            )
    return found


# ---------------------------------------------------------------- the scenarios


REWARD = '''"""The rehearsal's reward: longer answers score higher, so every step has a
gradient (the tiny model never answers right: an all-zero reward leaves the weights as they
are, and a resumed run would match the reference whatever it did)."""


def length_reward(prompt_str, responses, ground_truths, data_sources, extra_infos, **kwargs):
    return [{"score": len(r) / 100.0} for r in responses]
'''
# The rehearsal's own additions to the rendered containers: the reward above, and DeepSpeed's
# CPU op (compiled on first use, ~1 min) built once into the workspace instead of in every pod.
ROLLOUT_REWARD = "--set reward=reward.py:length_reward"
EXTENSIONS = {"TORCH_EXTENSIONS_DIR": "/workspace/.torch_extensions"}


@dataclass
class Rehearsal:
    """One workspace: prep and sft once, then launches of rollout || grpo over copies of that
    run directory."""

    host: Host
    figures: dict[str, Any] = field(default_factory=dict)
    skip: tuple[str, ...] = ()  # replicatedJobs not run (an image older than the JobSet)
    strategy: str = "zero2"  # grpo's strategy: zero2 (CI) or zero3

    def prepare(self) -> None:
        (self.host.workspace / "reward.py").write_text(REWARD)
        (self.host.workspace / ".faketime").mkdir()
        (self.host.workspace / ".faketime" / "sleep_fix.c").write_text(SLEEP_FIX)
        chown_tree(self.host.workspace)
        warm = self._warm_extensions()
        self.figures["setup_s"] = run_before_rl(self.host, knobs_for("base"), "setup", self.skip)
        if self.host.wait(warm, timeout=600) != 0:
            raise RehearsalError(f"building DeepSpeed's CPU op failed:\n{logs(warm)}")

    def _warm_extensions(self) -> str:
        """Build DeepSpeed's shared-memory op (what each grpo process would compile at start)
        into the workspace, and the fake clock's sleep fix, beside prep and sft."""
        spec = render("grpo", 0, knobs_for("base"), "setup", f"{self.host.prefix}-warm")
        source = SLEEP_FIX_SO.removesuffix(".so") + ".c"
        build_op = (
            "from deepspeed.accelerator import get_accelerator as a; "
            "a().create_op_builder('ShareMemCommBuilder').load()"
        )
        spec.entrypoint = "bash"
        spec.argv = [
            "-c",
            f'gcc -shared -fPIC -O2 -o {SLEEP_FIX_SO} {source} -ldl && python -c "{build_op}"',
        ]
        return self.host.start(spec, {**EXTENSIONS, "DS_ACCELERATOR": "cpu"})

    def knobs(self, run: str, **overrides: str) -> dict[str, str]:
        """The knobs of run `run`, whose directory starts as a copy of the prepared one."""
        target = self.host.run_dir(run)
        if not target.exists():
            shutil.copytree(self.host.run_dir("base") / "sft", target / "sft")
            chown_tree(target)
        knobs = knobs_for(run, **overrides)
        knobs["ROLLOUT_ARGS"] += f" {ROLLOUT_REWARD}"
        knobs["GRPO_ARGS"] = knobs["GRPO_ARGS"].replace("=zero2", f"={self.strategy}")
        return knobs

    def launch(self, knobs: dict[str, str], launch_id: str, tag: str, **kw: Any) -> Launch:
        extra = {("grpo", i): dict(EXTENSIONS) for i in range(pod_count("grpo", knobs))}
        for key, env in kw.pop("extra_env", {}).items():
            extra.setdefault(key, {}).update(env)
        return start_rl(self.host, knobs, launch_id, tag, extra_env=extra)

    def finish(self, launch: Launch, timeout: float = 600) -> None:
        codes = launch.wait_all(timeout)
        failed = {n: c for n, c in codes.items() if c != 0}
        if failed:
            raise RehearsalError(
                f"exit codes {failed}:\n" + "\n".join(f"== {n}\n{logs(n)}" for n in failed)
            )

    def uninterrupted(self, run: str, nodes: int) -> Path:
        """rollout || grpo on `nodes` trainer containers (1: one container with two processes,
        the same world size) to the end; records its rendezvous and step times."""
        extra = "" if nodes > 1 else " --set num_processes=2"
        knobs = self.knobs(run, GRPO_NODES=str(nodes))
        knobs["GRPO_ARGS"] += extra
        launch = self.launch(knobs, f"launch-{run}", run)
        status = first_seen(self.host.run_dir(run) / "status" / "grpo.json", launch)
        self.finish(launch)
        trainers = launch.pods["grpo"]
        started = max(docker_time(state(n)["StartedAt"]) for n in trainers)
        ready = log_time(trainers[0], r"INFO proactive_rl\.stages\.grpo\.main: plan ")
        lines = step_lines(self.host.run_dir(run))
        self.figures[run] = {
            "trainer_containers": nodes,
            "rendezvous_s": round(status - started, 2),
            "ready_s": round(ready - started, 2) if ready else None,
            "update_s": [round(r["time/update_s"], 3) for r in lines],
            "publish_s": [round(r["time/publish_s"], 3) for r in lines],
            "launch_s": round(time.time() - launch.started, 1),
        }
        return self.host.run_dir(run)

    def killed_and_restarted(self, run: str, victim: int = 0) -> Path:
        """Two trainer containers; trainer `victim` is `docker kill`ed once policy 1 is
        published, then every container of the launch is stopped and all are started again
        with the same knobs (RUN_MODE empty) and launch id, as a JobSet restart recreates them:
        the stages resume what their own launch claimed (PROACTIVE_LAUNCH_ID)."""
        knobs, launch_id = self.knobs(run), f"launch-{run}"
        first = self.launch(knobs, launch_id, f"{run}-a")
        wait_until(lambda: policy_published(self.host.run_dir(run), 1), first, "policy 1")
        docker("kill", first.pods["grpo"][victim])
        first.stop()
        survivors = {n: state(n)["ExitCode"] for n in first.names}
        second = self.launch(knobs, launch_id, f"{run}-b")
        self.finish(second)
        self.figures[run] = {"exit_codes_after_the_kill": survivors}
        return self.host.run_dir(run)

    def clock_offset(self, run: str, offset: str = "+10m") -> dict[str, Any]:
        """Trainer 0's clock `offset` ahead (libfaketime): the launch must train on past
        policy 2 with its peers alive; then the rollout worker is killed (SIGKILL) while the
        trainers wait for it, and they must stop on their own within peer_quiet_timeout. A
        restart of the whole launch (the fake clock still on) then runs to the end. The worker
        kills itself before it publishes the last step (PROACTIVE_CRASH_AT, shared/faults.py),
        so the trainers are sure to be waiting: a `docker kill` timed on policy 2 raced that
        step (0.3-0.5 s on the tiny model), and lost it once its peers polled faster."""
        knobs, launch_id = self.knobs(run), f"launch-{run}"
        fake = {("grpo", 0): faked_clock(offset)}
        crash = {("rollout", 0): {CRASH_ENV: f"rollout:before_publish:{STEPS - 1}"}}
        first = self.launch(knobs, launch_id, f"{run}-a", extra_env={**fake, **crash})
        (rollout,) = first.pods["rollout"]
        rollout_code = self.host.wait(rollout, timeout=600)
        if rollout_code != 137 or not policy_published(self.host.run_dir(run), STEPS - 1):
            raise RehearsalError(
                f"the rollout worker was to kill itself after policy {STEPS - 1}; it exited "
                f"{rollout_code}:\n{logs(rollout)}"
            )
        killed = docker_time(state(rollout)["FinishedAt"])
        result: dict[str, Any] = {"noticed_s": {}, "exit_codes": {}, "logs": {}}
        for name in first.pods["grpo"]:
            try:
                code = self.host.wait(name, timeout=QUIET_S + 90)
            except RehearsalError:
                code = None  # still waiting: the kill went unnoticed
            s = state(name)
            result["exit_codes"][name] = code
            result["noticed_s"][name] = (
                round(docker_time(s["FinishedAt"]) - killed, 1) if code is not None else None
            )
            result["logs"][name] = logs(name, 30)
        first.stop()
        second = self.launch(knobs, launch_id, f"{run}-b", extra_env=fake)
        self.finish(second)
        self.figures[run] = {k: v for k, v in result.items() if k != "logs"}
        return {**result, "trainers": first.pods["grpo"], "run_dir": self.host.run_dir(run)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the workspace and containers")
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    parser.add_argument(
        "--skip", action="append", default=[], help="a job not to run (e.g. preflight)"
    )
    parser.add_argument("--strategy", choices=("zero2", "zero3"), default="zero2")
    keep, out, skip, strategy = vars(parser.parse_args()).values()
    try:
        with host(keep=keep) as h:
            r = Rehearsal(h, skip=tuple(skip), strategy=strategy)
            r.prepare()
            two = r.uninterrupted("two", nodes=2)
            one = r.uninterrupted("one", nodes=1)
            r.figures["two_vs_one"] = differences(two, one) or "identical"
            r.figures["killed_vs_two"] = differences(r.killed_and_restarted("killed"), two) or (
                "identical"
            )
            clock = r.clock_offset("clock")
            r.figures["clock_vs_two"] = differences(clock["run_dir"], two) or "identical"
    except RehearsalError as err:
        print(f"rehearsal: FAILED: {err}", file=sys.stderr)
        return 1
    text = json.dumps(r.figures, indent=2, default=str)
    print(text)
    if out:
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

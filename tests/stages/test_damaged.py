"""Issue 11: every consumer checks a publication's STABLE.json (sizes and checksums) before it
uses the files, and refuses a damaged one with one message naming the file; prep rebuilds its
own damaged output; a full volume during a publish is one message and leaves nothing behind.
Each case runs the real `proactive` command."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from proactive_rl.shared.paths import DataPaths, RunPaths
from proactive_rl.shared.publish import publish_dir, read_marker, staging_dir, verify
from tests.conftest import fill, proactive, start


def flip_bytes(path: Path, count: int = 64) -> None:
    """Same size, different bytes, in the middle: headers still parse, only a checksum sees it."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def publish_model(model: Path, final: Path, meta: dict) -> None:
    """Publish a copy of a model folder the way the stages do (staging folder, then marker)."""
    staging = staging_dir(final)
    for file in model.iterdir():
        shutil.copy2(file, staging / file.name)
    publish_dir(staging, final, meta)


def refused(proc, *fragments: str) -> str:
    """One clear message: exit 2, no traceback, naming what the test expects."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in:\n{out[-3000:]}"
    return out


def prep(workdir: Path, *args: str, check: bool = True):
    return proactive("prep", "--set", "max_rl_rows=12", "--set", "test_fraction=0.25", *args,
                     cwd=workdir, check=check)  # fmt: skip


# ---------------------------------------------------------------- processed data


@pytest.mark.parametrize("damage", [truncate, flip_bytes, Path.unlink])
def test_prep_rebuilds_its_damaged_output_instead_of_calling_it_up_to_date(workdir, damage):
    prep(workdir)
    data = DataPaths(workdir / "data")
    damage(data.rl_train)
    again = prep(workdir)
    assert "nothing to do" not in again.stderr
    assert "data/processed/rl_train.parquet: " in again.stderr
    assert "rebuilding it" in again.stderr
    verify(data.processed)
    assert "nothing to do" in prep(workdir).stderr  # and now it is up to date


def test_sft_refuses_damaged_processed_data_saying_to_rerun_prep(workdir, tiny_model):
    prep(workdir)
    truncate(DataPaths(workdir / "data").rl_train)
    proc = proactive("sft", "--run-dir", "checkpoints/run", "--set", f"base_model={tiny_model}",
                     cwd=workdir, check=False)  # fmt: skip
    refused(proc, "rl_train.parquet: ", "bytes where", "Run `proactive prep` again")
    assert not (workdir / "checkpoints/run/sft").exists()


@pytest.mark.slow
def test_grpo_refuses_damaged_processed_data_saying_to_rerun_prep(workdir, tiny_model):
    prep(workdir)
    flip_bytes(DataPaths(workdir / "data").rl_test)
    proc = proactive("grpo", "--run-dir", "checkpoints/run", "--set", f"init_model={tiny_model}",
                     cwd=workdir, check=False)  # fmt: skip
    refused(proc, "rl_test.parquet: blake3 checksum mismatch", "Run `proactive prep` again")
    assert not (workdir / "checkpoints/run/policies").exists()


# ---------------------------------------------------------------- SFT epochs and policies


@pytest.mark.slow
def test_grpo_refuses_a_damaged_sft_epoch_as_its_starting_model(workdir, tiny_model):
    prep(workdir)
    paths = RunPaths(workdir / "checkpoints" / "run")
    publish_model(tiny_model, paths.sft_epoch(1), {"epoch": 1, "base_model": str(tiny_model)})
    flip_bytes(paths.sft_epoch(1) / "model.safetensors")
    proc = proactive("grpo", "--run-dir", str(paths.root), "--set", "init_model=sft",
                     cwd=workdir, check=False)  # fmt: skip
    refused(proc, "epoch_000001/model.safetensors: blake3 checksum mismatch (same size)",
            "proactive sft --clean")  # fmt: skip
    assert not paths.policy(0).exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (flip_bytes, "model.safetensors: blake3 checksum mismatch (same size)"),
        (Path.unlink, "tokenizer_config.json: missing"),
    ],
)
def test_eval_refuses_a_damaged_policy(workdir, tiny_model, damage, message):
    prep(workdir)
    paths = RunPaths(workdir / "checkpoints" / "run")
    publish_model(tiny_model, paths.policy(0), {"version": 0, "plan_id": "p", "step": None})
    damage(paths.policy(0) / message.split(":")[0])
    proc = proactive("eval", "--run-dir", str(paths.root), "--set", "checkpoints=policy:0",
                     cwd=workdir, check=False)  # fmt: skip
    refused(proc, f"step_000000/{message}", "Leave it out of checkpoints")
    assert not paths.eval.exists() or not any(paths.eval.iterdir())


def wait_until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_rollout_refuses_a_damaged_policy_and_grpo_stops_with_it(workdir, tiny_model):
    prep(workdir)
    paths = RunPaths(workdir / "checkpoints" / "run")
    grpo = start("grpo", "--run-dir", str(paths.root), "--set", f"init_model={tiny_model}",
                 "--set", "n=2", "--set", "prompts_per_step=2", cwd=workdir)  # fmt: skip
    try:
        wait_until(lambda: (paths.policy(0) / "STABLE.json").is_file() or grpo.poll() is not None)
        flip_bytes(paths.policy(0) / "model.safetensors")
        proc = proactive("rollout", "--run-dir", str(paths.root), cwd=workdir, check=False)
        refused(proc, "step_000000/model.safetensors: blake3 checksum mismatch (same size)")
        out = grpo.communicate(timeout=120)[0]
    finally:
        grpo.kill()
    assert grpo.returncode == 75, out[-3000:]  # stopped for its peer's failure: EX_TEMPFAIL
    assert "the rollout worker failed" in out and "checksum mismatch" in out
    assert not paths.rollout(0).exists()


# ---------------------------------------------------------------- rollouts


@pytest.mark.slow
def test_grpo_refuses_rollouts_whose_checksum_does_not_match(workdir, tiny_model):
    prep(workdir)
    paths = RunPaths(workdir / "checkpoints" / "run")
    grpo = start("grpo", "--run-dir", str(paths.root), "--set", f"init_model={tiny_model}",
                 "--set", "n=2", "--set", "prompts_per_step=2", cwd=workdir)  # fmt: skip
    try:
        wait_until(lambda: (paths.policy(0) / "STABLE.json").is_file() or grpo.poll() is not None)
        plan_id = read_marker(paths.policy(0))["plan_id"]
        # rollouts of the right plan whose file no longer matches its marker
        staging = staging_dir(paths.rollout(0))
        (staging / "rollouts.parquet").write_bytes(b"PAR1" + bytes(1000) + b"PAR1")
        publish_dir(staging, paths.rollout(0), {"plan_id": plan_id, "step": 0, "rows": 4})
        flip_bytes(paths.rollout_file(0), count=8)
        out = grpo.communicate(timeout=120)[0]
    finally:
        grpo.kill()
    assert grpo.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    assert "rollouts/step_000000/rollouts.parquet: blake3 checksum mismatch (same size)" in out
    assert not paths.policy(1).exists()


# ---------------------------------------------------------------- a full volume


def test_a_full_volume_during_prep_is_one_error_and_keeps_the_earlier_data(small_volume):
    shutil.copytree(Path(__file__).parents[2] / "data" / "sample", small_volume / "data/sample")
    data = DataPaths(small_volume / "data")
    prep(small_volume)
    before = read_marker(data.processed)
    fill(small_volume, leave=16 << 10)
    proc = prep(small_volume, "--set", "seed=7", check=False)  # a new config: a rebuild
    refused(proc, "could not write data/processed", "No space left on device (ENOSPC)",
            "MB free of 2.1 MB", "earlier outputs are intact")  # fmt: skip
    assert sorted(p.name for p in data.root.iterdir()) == ["processed", "sample"]
    assert verify(data.processed)["fingerprint"] == before["fingerprint"]

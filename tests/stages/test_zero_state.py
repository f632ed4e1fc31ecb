"""grpo's DeepSpeed ZeRO state on the volume is read as tensors and plain values only: a real
ZeRO-2/3 checkpoint round-trips through the engine's loader, and a checkpoint file whose
unpickling would run code is refused with a message naming it, before any of it runs.

Each case runs a one-process DeepSpeed engine (DeepSpeed's CPU accelerator, gloo) in its own
interpreter: the process group and DeepSpeed's globals stay out of the test process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.ports import free_port

pytest.importorskip("deepspeed", reason="DeepSpeed is installed in the CUDA images only")

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from types import SimpleNamespace
    import torch

    port = sys.argv[4]  # a free port for the one-process group (tests/ports.py)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", DS_ACCELERATOR="cpu")
    from proactive_rl.engine.parallel import Parallel
    from proactive_rl.shared.errors import UserError

    strategy, folder, poison = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = SimpleNamespace(micro_batch_size=1, grad_clip=1.0, cpu_offload=False)
    par = Parallel.start(strategy)

    def engine(seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        return par.wrap(model, optimizer, settings)

    def moments(eng):
        return [t.clone() for s in eng.optimizer.optimizer.state.values() for t in s.values()
                if t.dim() > 0]

    trained = engine(0)
    for _ in range(2):
        trained.backward(trained(torch.randn(1, 4)).pow(2).sum())
        trained.step()
    trained.save_checkpoint(folder, tag="v2")
    if poison == "yes":
        class RunsCode:
            def __reduce__(self):
                return (os.mkdir, (folder + "/code_ran",))
        for name in os.listdir(folder + "/v2"):
            if "optim_states" in name:
                torch.save({"optimizer_state_dict": RunsCode()}, f"{folder}/v2/{name}")
    fresh = engine(1)
    try:
        fresh.load_checkpoint(folder, tag="v2", load_module_strict=False,
                              load_lr_scheduler_states=False)
    except UserError as err:
        print("REFUSED:", err)
        sys.exit(2)
    same = all(torch.equal(a, b) for a, b in zip(moments(trained), moments(fresh), strict=True))
    print("ROUND TRIP:", same and len(moments(fresh)) > 0)
    """
)


def run_engine(tmp_path, strategy: str, poison: bool) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            strategy,
            str(tmp_path / "zero"),
            "yes" if poison else "no",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_zero_state_round_trips_with_weights_only(tmp_path, strategy):
    proc = run_engine(tmp_path, strategy, poison=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ROUND TRIP: True" in proc.stdout


def test_a_zero_state_file_that_would_run_code_is_refused(tmp_path):
    proc = run_engine(tmp_path, "zero2", poison=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "optim_states.pt holds more than tensors and plain values" in proc.stdout
    assert "--clean" in proc.stdout
    assert not (tmp_path / "zero" / "code_ran").exists()  # nothing ran

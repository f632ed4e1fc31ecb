"""grpo's optimizer state on the volume: it round-trips through save/load, and a file that would
run code when unpickled is refused with a message naming it, before any of it runs."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.paths import RunPaths
from proactive_rl.stages.grpo.resume import load_optimizer, save_optimizer

ONE_PROCESS = SimpleNamespace(engine=None, is_main=True)


def trained(lr: float = 1e-2):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def test_optimizer_state_round_trips_as_plain_tensors(tmp_path):
    paths = RunPaths(tmp_path / "run")
    model, optimizer, scheduler = trained()
    save_optimizer(paths, ONE_PROCESS, optimizer, scheduler, 3, masters=model)
    fresh_model, fresh_opt, fresh_sched = trained(lr=5e-3)
    load_optimizer(paths, ONE_PROCESS, fresh_opt, fresh_sched, 3, "cpu", masters=fresh_model)
    assert fresh_sched.last_epoch == scheduler.last_epoch
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr()
    for a, b in zip(optimizer.state.values(), fresh_opt.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert torch.equal(fresh_model.weight, model.weight)


class RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_state_file_that_would_run_code_is_refused(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.grpo_state.mkdir(parents=True)
    marker = tmp_path / "code_ran"
    torch.save({"version": 3, "optimizer": RunsCode(str(marker))}, paths.grpo_optimizer_state(3))
    _, optimizer, scheduler = trained()
    with pytest.raises(
        UserError, match=r"optimizer_step_000003\.pt holds more than tensors"
    ) as err:
        load_optimizer(paths, ONE_PROCESS, optimizer, scheduler, 3, "cpu")
    assert "--clean" in str(err.value)
    assert not marker.exists()


def test_the_state_of_the_newest_policy_outlives_saving_the_next(tmp_path):
    """A kill between saving the state for policy k+1 and publishing policy k+1 leaves policy k
    the newest: its own state must still be there (one file used to be overwritten, and the
    resume restarted the optimizer and the learning-rate schedule from scratch)."""
    from proactive_rl.stages.grpo.resume import prune_optimizer_states

    paths = RunPaths(tmp_path / "run")
    model, optimizer, scheduler = trained()
    save_optimizer(paths, ONE_PROCESS, optimizer, scheduler, 3)
    lr_of_3 = scheduler.get_last_lr()
    moment_of_3 = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    model(torch.randn(5, 4)).pow(2).sum().backward()
    optimizer.step()
    scheduler.step()
    save_optimizer(paths, ONE_PROCESS, optimizer, scheduler, 4)  # killed here: 3 is newest
    _, fresh_opt, fresh_sched = trained(lr=5e-3)
    load_optimizer(paths, ONE_PROCESS, fresh_opt, fresh_sched, 3, "cpu")
    assert fresh_sched.get_last_lr() == lr_of_3 != scheduler.get_last_lr()
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], moment_of_3)
    # policy 4 published in the background while the next state (and, under ZeRO, the other
    # processes' partitions of it) is being saved: the prune keeps it
    save_optimizer(paths, ONE_PROCESS, optimizer, scheduler, 5)
    for version in (3, 4, 5):
        (paths.grpo_state / "deepspeed" / f"v{version}").mkdir(parents=True)
    prune_optimizer_states(paths, 4)  # after policy 4 is published
    assert sorted(p.name for p in paths.grpo_state.glob("optimizer_*")) == [
        "optimizer_step_000004.pt",
        "optimizer_step_000005.pt",
    ]
    assert sorted(p.name for p in (paths.grpo_state / "deepspeed").iterdir()) == ["v4", "v5"]

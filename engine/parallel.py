"""How the trainers (sft, grpo) spread over the GPUs of their container.

strategy "single": one process (CPU or one GPU). "ddp": torch DistributedDataParallel, one
process per GPU (or per CPU worker with gloo: how the CPU tests check the multi-process maths).
"zero2"/"zero3": DeepSpeed ZeRO (optimizer state, gradients, and for zero3 the parameters
partitioned over the processes; `cpu_offload` moves optimizer state to host memory). Without a
GPU DeepSpeed runs on its CPU accelerator over gloo: slow, but the same code, which is how the
ZeRO paths are tested on machines without GPUs.

A stage relaunches itself under torchrun (`relaunch`) so `proactive sft|grpo` stays one command
in compose. sft hands the strategy to the Trainer (`trainer_deepspeed_config`); for grpo,
`Parallel` does the work: every process reads the whole step's rollouts (advantages need whole
groups) and trains on its share of the groups; all processes run the same number of
micro-batches, because DDP and ZeRO-3 synchronise inside forward/backward. Only rank 0 writes to
the volume.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

STRATEGIES = ("single", "ddp", "zero2", "zero3")


def row_tokens(row: dict[str, Any]) -> int:
    """A rollout row's prompt + response tokens: what a token budget counts, as veRL does."""
    return len(row["prompt_ids"]) + len(row["response_ids"])


def split_micro(rows: list[dict[str, Any]], size: int, max_tokens: int | None) -> list[list[int]]:
    """Positions of `rows`, in order, cut into micro-batches: greedily, a new one starts when
    the next row would take it past `max_tokens` tokens (row_tokens), or without a budget when
    it holds `size` rows. A row longer than the budget is a micro-batch of its own."""
    batches: list[list[int]] = []
    tokens = 0
    for i, row in enumerate(rows):
        n = row_tokens(row)
        if not batches or (
            len(batches[-1]) >= size if max_tokens is None else tokens + n > max_tokens
        ):
            batches.append([])
            tokens = 0
        batches[-1].append(i)
        tokens += n
    return batches


def relaunch(strategy: str, num_processes: int | None) -> None:
    """Re-execute this command under torchrun, once, when a multi-process strategy is chosen.
    A strategy that cannot run here is a UserError before anything starts."""
    if strategy in ("zero2", "zero3"):
        import importlib.util

        from proactive_rl.shared.errors import UserError

        if importlib.util.find_spec("deepspeed") is None:
            raise UserError(
                f"strategy={strategy} needs DeepSpeed, a dependency of proactive-rl that is "
                "missing here (make install, or the images, install it); or use "
                "strategy=single or ddp"
            )
        if not torch.cuda.is_available():
            import shutil

            if shutil.which("c++") is None:
                raise UserError(
                    f"strategy={strategy} without a GPU runs DeepSpeed on its CPU accelerator, "
                    "which compiles a shared-memory op on first use and needs a C++ compiler "
                    "(apt-get install g++ python3-dev); or use strategy=single or ddp"
                )
            # DeepSpeed would guess the CPU too, with a warning in every process
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if strategy == "single" or "LOCAL_RANK" in os.environ:
        return
    count = num_processes or max(torch.cuda.device_count(), 1)
    command = [
        sys.executable,
        "-m",
        "proactive_rl.engine.torchrun",  # torchrun, exiting with its failed process's status
        "--standalone",
        f"--nproc_per_node={count}",
        "-m",
        "proactive_rl.stages.cli",
        *sys.argv[1:],
    ]
    sys.stdout.flush()
    os.execv(sys.executable, command)


def leave_process_group() -> None:
    """End of a multi-process stage: drop what still holds the process group (DDP/DeepSpeed
    wrappers: one collected after the group is gone aborts the process at exit, "terminate
    called without an active exception"), wait for every process, then leave the group."""
    import gc

    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@dataclass
class Parallel:
    strategy: str
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    engine: Any = None  # the DeepSpeed engine (zero2/zero3)
    ddp: Any = None  # the DDP wrapper (ddp)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, strategy: str) -> Parallel:
        cuda = torch.cuda.is_available()
        if strategy == "single":
            return cls(strategy, device=torch.device("cuda" if cuda else "cpu"))
        if "LOCAL_RANK" not in os.environ:
            raise RuntimeError(f"strategy {strategy} runs under torchrun (see relaunch)")
        import torch.distributed as dist

        local = int(os.environ["LOCAL_RANK"])
        if cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        return cls(strategy, dist.get_rank(), dist.get_world_size(), device)

    def close(self) -> None:
        """Leave the process group once every process is done (a clean torchrun exit). The
        DDP/DeepSpeed wrappers go first: a wrapper collected after its process group is gone
        aborts the process at exit ("terminate called without an active exception")."""
        self.ddp = self.engine = None
        leave_process_group()

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def reduce(self, values: dict[str, float], op: str = "sum") -> dict[str, float]:
        """Sum (or min, max) each value over the processes."""
        if self.world == 1 or not values:
            return values
        ops = {"sum": "SUM", "min": "MIN", "max": "MAX"}
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, ops[op]))
        return dict(zip(keys, t.tolist(), strict=True))

    def shard(
        self, rows: list[dict[str, Any]], indices: list[int], rank: int | None = None
    ) -> list[int]:
        """Process `rank`'s (default: this one's) share of `indices`: whole groups, dealt
        round-robin in order."""
        rank = self.rank if rank is None else rank
        groups = list(dict.fromkeys(rows[j]["group_id"] for j in indices))
        mine = {g for i, g in enumerate(groups) if i % self.world == rank}
        return [j for j in indices if rows[j]["group_id"] in mine]

    def micro_batches(
        self,
        rows: list[dict[str, Any]],
        indices: list[int],
        size: int,
        max_tokens: int | None = None,
    ) -> int:
        """The most micro-batches (split_micro) any process gets for `indices` (each computes
        it alike)."""
        return max(
            len(split_micro([rows[j] for j in self.shard(rows, indices, r)], size, max_tokens))
            for r in range(self.world)
        )

    # ------------------------------------------------------------------ the model
    def wrap(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Any):
        """Returns the module to run forward passes through (DDP/DeepSpeed wrapper or model)."""
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)
            return self.ddp
        if self.strategy in ("zero2", "zero3"):
            import deepspeed

            bf16 = next(model.parameters()).dtype == torch.bfloat16  # the precision chosen
            self.engine, *_ = deepspeed.initialize(
                model=model,
                optimizer=optimizer,
                config=deepspeed_config(self.strategy, config, bf16),
            )
            # DeepSpeed's own loader unpickles anything (weights_only=False)
            self.engine.checkpoint_engine.load = load_zero_file
            return self.engine
        return model

    def backward(self, module: torch.nn.Module, loss: torch.Tensor, last: bool) -> None:
        # DDP/ZeRO average gradients over processes; each process's loss is its share of the
        # global mini-batch loss, so scaling by the world size makes the average the sum.
        loss = loss * self.world
        if self.engine is not None:
            self.engine.set_gradient_accumulation_boundary(last)
            self.engine.backward(loss)
        elif self.ddp is not None and not last:
            with self.ddp.no_sync():  # reduce once per mini-batch, not per micro-batch
                loss.backward()
        else:
            loss.backward()

    def step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, clip: float) -> float:
        """Clip, step the optimizer; returns the global gradient norm before clipping."""
        if self.engine is not None:
            self.engine.step()  # clips (gradient_clipping in its config) and zeroes the grads
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def full_state_dict(
        self, model: torch.nn.Module, trainable_only: bool = False
    ) -> dict[str, torch.Tensor] | None:
        """The whole model's weights for publishing (collective under ZeRO-3: every rank calls
        it; rank 0 gets the dict). None = save the module as it is. `trainable_only` (LoRA)
        gathers just the trainable parameters instead of the whole model."""
        if self.strategy != "zero3":
            return None
        if not trainable_only:
            return self.engine._zero3_consolidated_16bit_state_dict()
        import deepspeed

        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters([p for _, p in named]):
            return {n: p.detach().cpu().clone() for n, p in named} if self.is_main else None


def load_zero_file(path: str, map_location: Any = None) -> Any:
    """Read one file of a DeepSpeed ZeRO checkpoint (grpo --resume) as tensors and plain values
    only, so that whoever can write the run directory cannot run code in the trainer. The
    optimizer state holds four DeepSpeed classes besides tensors; they are allowed, and no
    other class or function. A file that needs more is a UserError naming it."""
    import pickle

    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from proactive_rl.shared.errors import UserError

    allowed = [LossScaler, DynamicLossScaler, fragment_address, ZeroStageEnum]
    # Python pickles an enum member as getattr(ZeroStageEnum, name): under getattr's name the
    # unpickler gets _enum_member, which returns that enum's members and nothing else
    allowed += [(_enum_member, "__builtin__.getattr"), (_enum_member, "builtins.getattr")]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines()]
        why = next((x for x in lines if x.startswith("WeightsUnpickler error")), lines[0])
        why = why.removeprefix("WeightsUnpickler error: ").rstrip(".")
        raise UserError(
            f"{path} holds more than tensors and plain values, so it is not loaded (unpickling "
            f"it could run code): {why}. Start over with --clean, or put back a copy of the "
            "file you trust"
        ) from None


def _enum_member(owner: Any, name: str) -> Any:
    from deepspeed.runtime.zero.config import ZeroStageEnum

    if owner is ZeroStageEnum and name in ZeroStageEnum.__members__:
        return ZeroStageEnum[name]
    import pickle

    raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not an allowed enum member")


def deepspeed_config(strategy: str, config: Any, bf16: bool) -> dict[str, Any]:
    """ZeRO settings from the GRPO config; the optimizer and schedule stay ours (torch AdamW, so
    nothing is JIT-compiled), gradient accumulation is driven per micro-batch by `backward`."""
    zero: dict[str, Any] = {
        "stage": 2 if strategy == "zero2" else 3,
        "overlap_comm": True,
        "contiguous_gradients": True,
    }
    if strategy == "zero3":
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if config.cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    # offload runs our torch AdamW on the host instead of compiling DeepSpeed's CPU Adam
    return {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": config.grad_clip,
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def trainer_deepspeed_config(strategy: str, cpu_offload: bool) -> dict[str, Any] | None:
    """The DeepSpeed config for the Hugging Face Trainer (sft); "auto" = the Trainer fills in
    batch sizes, clipping and precision from its own arguments. None for single/ddp."""
    if strategy not in ("zero2", "zero3"):
        return None
    zero: dict[str, Any] = {"stage": 2 if strategy == "zero2" else 3, "overlap_comm": True}
    if strategy == "zero3":
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
        "zero_force_ds_cpu_optimizer": False,
    }

"""The GPU check every GPU stage (sft, rollout, grpo, eval) and `proactive preflight` run first.

Where the NVIDIA runtime is not a container's runtime, or the GPUs were not requested, torch sees
no CUDA device and training quietly falls back to the CPU: hours lost before anyone notices.
PROACTIVE_GPUS says what a container was given (a count "2" or a device list "0,1"; 0 turns the
check off); the CUDA images set PROACTIVE_FLAVOR=cuda, which alone means at least one GPU. A
container that sees fewer refuses at start, in one line, before any model loads.

torch is imported only when there is something to check, so CPU runs start as fast as before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from proactive_rl.shared.errors import UserError

GPUS_ENV = "PROACTIVE_GPUS"
FLAVOR_ENV = "PROACTIVE_FLAVOR"
# one entry of a device list: an index, or a GPU / MIG uuid as NVIDIA_VISIBLE_DEVICES takes it
_DEVICE = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")


@dataclass(frozen=True)
class Expected:
    """How many CUDA devices torch must see, and the setting that says so."""

    count: int
    because: str


def count_gpus(raw: str) -> int:
    """The GPUs a PROACTIVE_GPUS value gives: a count, or the length of a device list.

    >>> count_gpus("2"), count_gpus("0,1"), count_gpus("GPU-4b1c,GPU-77ad"), count_gpus("0")
    (2, 2, 2, 0)
    """
    value = raw.strip()
    if value.isdigit():
        return int(value)
    devices = [d.strip() for d in value.split(",")]
    if not all(_DEVICE.match(d) for d in devices):
        raise UserError(
            f"{GPUS_ENV}={raw!r} is neither a GPU count (2) nor a device list (0,1): set it to "
            "the GPUs this container is given, or 0 to run on the CPU"
        )
    return len(devices)


def expected_gpus(environ: Mapping[str, str] = os.environ) -> Expected | None:
    """What this container must see (None: nothing to check). PROACTIVE_GPUS wins; without it
    the CUDA image (PROACTIVE_FLAVOR=cuda) needs at least one GPU."""
    raw = environ.get(GPUS_ENV, "").strip()
    if raw:
        count = count_gpus(raw)
        return Expected(count, f"{GPUS_ENV}={raw}") if count else None
    if environ.get(FLAVOR_ENV, "").strip() == "cuda":
        return Expected(1, f"{FLAVOR_ENV}=cuda: the CUDA image; {GPUS_ENV}=0 runs it on the CPU")
    return None


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def check_gpus(
    environ: Mapping[str, str] = os.environ, visible: Callable[[], int] = visible_gpus
) -> None:
    """Refuse, in one line, when torch sees fewer CUDA devices than this container was given."""
    expected = expected_gpus(environ)
    if expected is None:
        return
    seen = visible()
    if seen >= expected.count:
        return
    plural = "s" if expected.count > 1 else ""
    restricted = environ.get("CUDA_VISIBLE_DEVICES")
    limit = f" (CUDA_VISIBLE_DEVICES={restricted})" if restricted is not None else ""
    raise UserError(
        f"expected {expected.count} GPU{plural} ({expected.because}) but torch sees {seen}{limit}"
        f"{_no_cuda_build()}: is the NVIDIA runtime this container's runtime (Kubernetes: the "
        "pod's runtimeClassName, e.g. nvidia, where it is not the nodes' default; Docker: the "
        "NVIDIA container toolkit), and were the GPUs requested (Kubernetes: nvidia.com/gpu in "
        "the container's resources; compose: deploy.resources.reservations.devices)?"
    )


def _no_cuda_build() -> str:
    """A note when this torch was built without CUDA (a CPU wheel in a CUDA image)."""
    try:
        import torch
    except ImportError:
        return ""
    return "; this torch is a CPU build" if torch.version.cuda is None else ""

"""Loaded inside each vLLM worker process (`worker_extension_cls`): read a published policy
folder's safetensors and copy them into the running model, so a new policy version costs a read
from the volume instead of an engine restart (CUDA graphs, KV cache and compiled kernels stay).

Imported only by vLLM itself; never on the CPU path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


class PolicyLoader:
    """Mixed into vLLM's GPU worker class; `self.model_runner` is the worker's."""

    model_runner: Any

    def load_policy(self, folder: str) -> int:
        """Load every tensor of `folder`/*.safetensors; returns how many the model took."""
        from safetensors import safe_open

        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {folder}")

        def tensors() -> Iterator[tuple[str, Any]]:
            for file in files:
                with safe_open(str(file), framework="pt", device="cpu") as handle:
                    for name in handle.keys():
                        yield name, handle.get_tensor(name)

        # the model's own loader maps HF names onto vLLM's fused/sharded parameters (qkv,
        # gate_up, tensor-parallel slices), exactly as at engine start
        loaded = self.model_runner.model.load_weights(weights=tensors())
        return len(loaded) if loaded is not None else 0

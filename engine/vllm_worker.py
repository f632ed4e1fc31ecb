"""Runs inside vLLM's worker processes (engine argument `worker_extension_cls`, vLLM's public way
to add methods that `LLM.collective_rpc` can call): the in-place policy reload.

`reload_policy` is vLLM's own `reload_weights(weights_path=...)` plus one repair. A model that
ties its output head to its input embedding (the tiny test model, SmolLM2; Qwen3-8B does not)
has no head weights in its checkpoint, so the reload never re-processes the head. On a GPU the
head reads the shared embedding tensor and sees the new values; vLLM's CPU build computes the
head from a copy packed at load time (oneDNN / packed GEMM), which would keep sampling from the
old policy's head. Re-running the head's own weight processing rebuilds that copy from the
reloaded embedding (on a GPU it does nothing). tests/vllm/test_engine.py compares a reloaded
engine with a fresh one to catch this.
Imports only what the worker already has: this module is imported in every vLLM worker.
"""

from __future__ import annotations


class PolicyReload:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def reload_policy(self, weights_path: str) -> None:
        self.reload_weights(weights_path=weights_path)
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        method = getattr(head, "quant_method", None)
        if method is None or not tied(model, head):
            return
        method.process_weights_after_loading(head)

    def compute_threads(self) -> int:
        """The threads this worker's model computes on: on vLLM's CPU build, its cores less those
        it reserves (VllmConfig.cpu_reserved_cores); logged when the engine starts."""
        import torch

        return torch.get_num_threads()


def tied(model, head) -> bool:
    """The head shares its weight tensor with another module (the input embedding)."""
    weight = getattr(head, "weight", None)
    if weight is None or weight.numel() == 0:
        return False
    return any(
        p.data_ptr() == weight.data_ptr()
        for name, p in model.named_parameters(remove_duplicate=False)
        if not name.startswith("lm_head.")
    )

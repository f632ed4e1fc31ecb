"""How a trained step becomes a published policy: the folder written (publish_policy), old
policies pruned, and where the writing runs (Publisher). On-policy the rollout worker waits for
every policy, so the trainer writes it itself. One step off-policy or more, the rollout worker
samples the next step from an older policy while this one is written: the trainer takes a
snapshot of the weights in host memory and writes it in a background thread while it trains the
next step (on the H200 a policy took 9.8 s to publish against a 9-14 s update,
docs/performance.md). Torch is imported inside the functions: `proactive grpo --help` stays
instant."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from proactive_rl.engine.host_memory import drop_cached_pages
from proactive_rl.shared.paths import RunPaths, numbered_children
from proactive_rl.shared.publish import is_stable, staged

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")
logger = logging.getLogger(__name__)


def publish_policy(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    paths: RunPaths,
    version: int,
    meta: dict[str, Any],
    init_dir: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
    publish_dtype: torch.dtype | None = None,
    spent: int | None = None,
) -> float:
    """Save a complete Hugging Face folder (the consolidated weights under ZeRO-3), or a LoRA
    adapter naming its base, and publish it; vLLM and transformers load it as it is. `spent`:
    a published version no rollout loads again, whose cached pages this one's write reuses
    (engine/host_memory.py). Returns the seconds it took."""
    from proactive_rl.stages.grpo.policy import save_policy

    start = time.perf_counter()
    if spent is not None and is_stable(old := paths.policy(spent)):
        drop_cached_pages(old)
    final = paths.policy(version)
    with staged(final, {"version": version, **meta}) as staging:
        save_policy(model, staging, final, init_dir, state_dict, publish_dtype)
        tokenizer.save_pretrained(staging)
    return time.perf_counter() - start


def prune_policies(paths: RunPaths, keep: int | None) -> None:
    """Keep the newest `keep` policies (None: all)."""
    if keep is None:
        return
    for _, folder in numbered_children(paths.policies)[:-keep]:
        shutil.rmtree(folder)


class Publisher(Generic[T]):
    """Runs one publish at a time: in the caller's thread, or (`background`) in a thread of its
    own, while the caller goes on. Each publish returns a result; `finished` hands them over in
    order once they are done. A background publish's error is raised in the caller by the next
    `check`, `wait` or `close`, never lost."""

    def __init__(self, background: bool) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="publish") if background else None
        self._pending: Future[T] | None = None
        self._done: list[T] = []

    @property
    def background(self) -> bool:
        return self._pool is not None

    def submit(self, publish: Callable[[], T]) -> None:
        """Start `publish` (the previous one must have been waited for)."""
        if self._pending is not None:
            raise RuntimeError("a publish is still running: wait() for it first")
        if self._pool is None:
            self._done.append(publish())
        else:
            self._pending = self._pool.submit(publish)

    def check(self) -> None:
        """Raise the running publish's error if it has failed (for loops that wait on others)."""
        if self._pending is not None and self._pending.done():
            self._pending.result()

    def wait(self) -> float:
        """Wait for the running publish (raising its error); the seconds waited."""
        if self._pending is None:
            return 0.0
        start = time.perf_counter()
        pending, self._pending = self._pending, None
        self._done.append(pending.result())
        return time.perf_counter() - start

    def finished(self) -> list[T]:
        """The results of the publishes done since the last call, oldest first."""
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        """Wait for the last publish and stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def close_after_failure(self) -> None:
        """Once the caller has failed: let a running publish end (its folder is whole or
        absent), and log its own error, if it has one, rather than raise it over the caller's."""
        try:
            self.close()
        except Exception:
            logger.exception("the policy being written when the trainer failed was not published")

"""A hook for the crash tests (tests/stages/test_crash_resume.py), and for nothing else.

`PROACTIVE_CRASH_AT=<stage>:<point>:<step>` (e.g. `grpo:after_optimizer_save:1`) makes the worker
that reaches the named point at that step kill itself with SIGKILL: no cleanup, no status
update, exactly what `kill -9` or the out-of-memory killer leaves behind. The points are the
narrow windows a timed external kill rarely hits (docs/reliability.md, "What --resume promises").
Unset, as it always is outside those tests, it does nothing.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "PROACTIVE_CRASH_AT"


def crash_point(stage: str, point: str, step: int) -> None:
    """Kill this process now if PROACTIVE_CRASH_AT names this stage, point and step."""
    if os.environ.get(CRASH_ENV) == f"{stage}:{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)

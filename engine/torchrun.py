"""`python -m proactive_rl.engine.torchrun ARGS`: torchrun (torch.distributed.run, same
arguments) that exits with the status of the process that failed first.

torchrun itself exits 1, with a traceback, whatever its processes exited with, so a multi-process
stage (sft or grpo under ddp/zero*, relaunched by engine/parallel.relaunch; grpo on several
Kubernetes pods) would lose the CLI's exit statuses: 2 for a problem to fix, never retried, and 75
for a worker that stopped for want of its peer, which a restart can cure (stages/cli.py).
"""

from __future__ import annotations

import sys
from typing import Any


def failure_status(error: Any) -> int:
    """The exit status of the process that failed first (a ChildFailedError's); 1 when it
    died of a signal (negative status) or left none."""
    _, failure = error.get_first_failure()
    status = getattr(failure, "exitcode", 1)
    return status if isinstance(status, int) and status > 0 else 1


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except ChildFailedError as error:
        sys.exit(failure_status(error))


if __name__ == "__main__":
    main()

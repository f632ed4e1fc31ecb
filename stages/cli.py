"""`proactive`: one command, a subcommand per pipeline stage."""

from __future__ import annotations

import sys

import click

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.metrics import setup_logging
from proactive_rl.shared.peers import PeerFailed, WaitTimeout
from proactive_rl.stages.eval.main import command as eval_command
from proactive_rl.stages.export.main import command as export_command
from proactive_rl.stages.grpo.main import command as grpo_command
from proactive_rl.stages.preflight import command as preflight_command
from proactive_rl.stages.prep.main import command as prep_command
from proactive_rl.stages.rollout.main import command as rollout_command
from proactive_rl.stages.sft.main import command as sft_command
from proactive_rl.stages.sweep.main import command as sweep_command
from proactive_rl.stages.tiny import command as tiny_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def group(verbose: bool) -> None:
    """proactive-rl: SFT warm-up, then GRPO with a group-aware reward that pays for admitting
    uncertainty only on questions the model usually gets wrong.

    \b
    Pipeline (each stage also runs as its own container, see compose.yaml):
      proactive prep      users' JSONL / SimpleQA CSV -> data/processed (SFT jsonl, RL parquet)
      proactive sft       SFT warm-up -> <run>/sft/epoch_N (HF folders)
      proactive grpo      GRPO trainer worker -> <run>/policies/step_N
      proactive rollout   rollout worker (runs beside grpo) -> <run>/rollouts/step_N
      proactive eval      compare checkpoints on the test split -> <run>/eval/report/report.md
      proactive export    one checkpoint -> a Hugging Face folder with a model card (LoRA merged)
      proactive sweep     a grid of runs (the recipe's experiments) -> one comparison report
      proactive preflight check every stage's settings before any runs (compose, the JobSet)

    \b
    Exit status: 0 done; 2 a problem to fix (settings, inputs: a retry would fail the same);
    75 (EX_TEMPFAIL) stopped for want of the peer worker (it failed, went quiet or never
    came): a restart of the run may succeed.
    """
    setup_logging(verbose)


group.add_command(prep_command, "prep")
group.add_command(sft_command, "sft")
group.add_command(rollout_command, "rollout")
group.add_command(grpo_command, "grpo")
group.add_command(eval_command, "eval")
group.add_command(export_command, "export")
group.add_command(sweep_command, "sweep")
group.add_command(preflight_command, "preflight")
group.add_command(tiny_command, "tiny-model")


# sysexits.h's EX_TEMPFAIL: the worker stopped because its peer failed, went quiet or timed out,
# not for anything of its own; Kubernetes' podFailurePolicy restarts the run on it
EX_TEMPFAIL = 75
EX_USAGE = 2  # a user error: settings or inputs to fix, never retried


def main() -> None:
    try:
        status = group.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (PeerFailed, WaitTimeout) as exc:  # UserErrors too: caught before them
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_USAGE)
    # without standalone mode click returns, not raises, a command's Exit (preflight's 2)
    if isinstance(status, int) and status:
        sys.exit(status)


if __name__ == "__main__":
    main()

"""The update's FLOPs as scripts/gpu_check.py counts them for MFU (make gpu-check, make
bench-limits): what stages/grpo/update.py computes, not a fixed 8N or 10N a token. Since the
update reads pi_old off its own forward when a step makes one pass without importance weights,
that no-grad forward must not be counted; a second mini-batch, a second epoch or importance
weights bring it back."""

from __future__ import annotations

import json
import sys

import pytest

from proactive_rl.stages.grpo.config import GrpoConfig
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from gpu_check import update_flops  # noqa: E402

N = 1_000  # parameters
TOKENS = 10  # prompt + response tokens of the step's rows


def flops(tmp_path, **settings) -> float:
    """update_flops for a run whose grpo config is GrpoConfig's with `settings`."""
    loss = settings.pop("loss", {})
    config = GrpoConfig(**settings).model_dump()
    config["loss"].update(loss)
    (tmp_path / "configs").mkdir(exist_ok=True)
    (tmp_path / "configs" / "grpo.json").write_text(json.dumps(config))
    return update_flops(tmp_path, False, N, TOKENS) / (N * TOKENS)


@pytest.mark.parametrize(
    ("settings", "per_token"),
    [
        # one pass, one mini-batch: train 6N + the KL reference's forward 2N, pi_old read off
        ({"prompts_per_step": 4, "mini_batch_prompts": 4}, 8),
        # without the KL term no reference forward
        ({"prompts_per_step": 4, "mini_batch_prompts": 4, "loss": {"kl_coef": 0.0}}, 6),
        # two mini-batches: the second's pi_old is a no-grad forward (2N on half the tokens)
        ({"prompts_per_step": 4, "mini_batch_prompts": 2}, 9),
        # two epochs: each trains with the reference beside it; pi_old frozen for all rows
        ({"prompts_per_step": 4, "mini_batch_prompts": 4, "ppo_epochs": 2}, 18),
        # importance weights need pi_old before the update: a forward for every row
        ({"prompts_per_step": 4, "mini_batch_prompts": 4, "loss": {"is_correction": "token"}}, 10),
    ],
)
def test_the_update_flops_per_token(tmp_path, settings, per_token):
    assert flops(tmp_path, **settings) == pytest.approx(per_token)

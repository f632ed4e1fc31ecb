"""The GRPO update on the real tiny model: micro-batching (by rows or by token budget) changes
neither the gradients nor pi_old, the transformers sampler's logprobs equal the trainer's, and
with ratio 1 and no KL the update is the advantage-weighted log-likelihood gradient."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from proactive_rl.engine.generation import SamplingConfig, TransformersBackend
from proactive_rl.engine.parallel import Parallel
from proactive_rl.stages.grpo.batches import MicroSplit, plan_mini_batches
from proactive_rl.stages.grpo.config import GrpoConfig, LossConfig
from proactive_rl.stages.grpo.loss import Normalizer, token_logprobs
from proactive_rl.stages.grpo.update import (
    Policies,
    Share,
    accumulate_gradients,
    collate,
    freeze_old_policy,
    logprobs_of,
    optimise,
    score_rows,
    share_of,
    train_step,
)
from tests.stages.test_grpo_parallel import N, rollout_rows

CPU = torch.device("cpu")


def synthetic_rows(vocab: int, count: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        prompt = torch.randint(
            3, vocab, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g
        )
        resp = torch.randint(3, vocab, (int(torch.randint(1, 11, (1,), generator=g)),), generator=g)
        rows.append({"prompt_ids": prompt.tolist(), "response_ids": resp.tolist()})
    adv = torch.randn(count, generator=g, dtype=torch.float64)
    return rows, adv


def grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def model64(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64)
    model.train()
    return model


@pytest.mark.parametrize(
    "agg",
    [
        "token-mean",
        "token-sum",
        "seq-mean-token-sum",
        "seq-mean-token-mean",
        "seq-mean-token-sum-norm",
    ],
)
def test_gradients_do_not_depend_on_the_micro_batch_size(model64, agg):
    rows, adv = synthetic_rows(model64.config.vocab_size)
    ref = AutoModelForCausalLM.from_pretrained(model64.name_or_path, dtype=torch.float64)
    with torch.no_grad():  # a reference that differs from the policy, so KL has a gradient
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cfg = LossConfig(agg=agg, kl_coef=0.1, entropy_coef=0.01)
    # pi_old differs from the current policy so some ratios are clipped
    old = [lp + 0.3 * torch.randn_like(lp) for lp in logprobs_of(model64, rows, 1.0, 3, CPU)]
    keep = torch.ones(len(rows))
    norm = Normalizer(
        tokens=float(sum(len(r["response_ids"]) for r in rows)), sequences=7.0, max_len=10.0
    )
    results = []
    # rows hold 3..18 tokens: a budget of 20 packs one to several rows a micro-batch, a budget
    # of 1 puts every row alone (each longer than the budget), whatever micro_batch_size says
    for micro, budget in ((len(rows), None), (3, None), (1, None), (1, 20), (len(rows), 1)):
        model64.zero_grad(set_to_none=True)
        share = Share(rows, adv, keep, norm, MicroSplit(micro, budget), old=old)
        stats = accumulate_gradients(Policies(model64, ref, 1.0, CPU), share, cfg)
        results.append((grads(model64), stats))
    (whole, s_whole), *others = results
    assert s_whole["clip_frac"] > 0
    for split, s_split in others:
        for a, b in zip(whole, split, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)
        for key in s_whole:
            assert s_split[key] == pytest.approx(s_whole[key], rel=1e-6, abs=1e-12)


def test_pi_old_does_not_depend_on_its_micro_batches(model64):
    rows, _ = synthetic_rows(model64.config.vocab_size)
    whole = logprobs_of(model64, rows, 1.0, len(rows), CPU)
    assert [lp.shape[0] for lp in whole] == [len(r["response_ids"]) for r in rows]
    # by rows, by token budget, and with padding passes (ZeRO-3) whose results are dropped
    for micro, budget, passes in ((1, None, None), (2, 20, None), (7, 1, None), (3, 25, 9)):
        split = logprobs_of(model64, rows, 1.0, micro, CPU, passes, budget)
        for a, b in zip(whole, split, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_train_step_does_not_depend_on_the_micro_batch_settings(model64):
    """The config's micro-batch settings reach both passes and change nothing trained."""
    rows = rollout_rows(model64.config.vocab_size)
    before = [p.detach().clone() for p in model64.parameters()]
    results = []
    for settings in (
        {"micro_batch_size": 20},
        {"micro_batch_tokens": 24, "log_prob_micro_batch_size": 3},
        {"micro_batch_size": 2, "log_prob_micro_batch_tokens": 1},
    ):
        cfg = GrpoConfig(
            n=N,
            mini_batch_prompts=2,
            ppo_epochs=2,
            learning_rate=0.5,
            loss={"kl_coef": 0.0},
            **settings,
        )
        with torch.no_grad():
            for p, b in zip(model64.parameters(), before, strict=True):
                p.copy_(b)
        optimizer = torch.optim.SGD(model64.parameters(), lr=cfg.learning_rate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        stats = train_step(model64, None, optimizer, scheduler, rows, cfg, 1.0, 8, CPU, N)
        results.append(([p.detach().clone() for p in model64.parameters()], stats))
    with torch.no_grad():  # the module-scoped model leaves as it came
        for p, b in zip(model64.parameters(), before, strict=True):
            p.copy_(b)
    (params, stats), *others = results
    assert stats["loss/clip_frac"] > 0  # the second epoch's ratios moved
    assert max(float((p - b).abs().max()) for p, b in zip(params, before, strict=True)) > 1e-4
    for other, other_stats in others:
        for a, b in zip(params, other, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        for key, value in stats.items():
            assert other_stats[key] == pytest.approx(value, rel=1e-6, abs=1e-12, nan_ok=True), key


@pytest.mark.parametrize("mini_batch_prompts", [5, 2])
def test_one_pass_reads_pi_old_off_its_first_update(model64, mini_batch_prompts):
    """With one pass and no importance weights, the first mini-batch's pi_old is read off its
    own training forward instead of a no-grad forward of its own: the same parameters and
    metrics as freezing pi_old for every row first, one forward fewer per row of it."""
    rows = rollout_rows(model64.config.vocab_size, seed=1)
    before = [p.detach().clone() for p in model64.parameters()]
    cfg = GrpoConfig(n=N, mini_batch_prompts=mini_batch_prompts, learning_rate=0.5, loss={})
    assert cfg.ppo_epochs == 1 and cfg.loss.is_correction == "none"

    def restore():
        with torch.no_grad():
            for p, b in zip(model64.parameters(), before, strict=True):
                p.copy_(b)

    def sgd():
        optimizer = torch.optim.SGD(model64.parameters(), lr=cfg.learning_rate)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    no_grad_rows = []  # rows of every forward made without a graph: pi_old's
    hook = model64.register_forward_hook(
        lambda _m, args, kwargs, _o: (
            None
            if torch.is_grad_enabled()
            else no_grad_rows.append(kwargs.get("input_ids", args[0] if args else None).shape[0])
        ),
        with_kwargs=True,
    )
    try:
        stats = train_step(model64, None, *sgd(), rows, cfg, 1.0, 8, CPU, N)
    finally:
        hook.remove()
    ours = [p.detach().clone() for p in model64.parameters()]

    # the reference: pi_old frozen for every row before the first update
    restore()
    policies = Policies(model64, None, 1.0, CPU)
    scored = score_rows(rows, cfg.loss)
    minis = plan_mini_batches(rows, cfg, N, Parallel("single", device=CPU))
    old = freeze_old_policy(policies, scored, minis, cfg.loss)
    shares = [share_of(scored, mini, old, 8.0) for mini in minis]
    optimizer, _ = sgd()
    losses, _, _ = optimise(policies, Parallel("single", device=CPU), optimizer, shares, cfg, 1)
    reference = [p.detach().clone() for p in model64.parameters()]
    restore()

    assert sum(no_grad_rows) == len(rows) - len(minis[0].rows)  # none for the first mini-batch
    assert max(float((p - b).abs().max()) for p, b in zip(ours, before, strict=True)) > 1e-4
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    diffs = torch.cat([(old.logprobs[j] - scored.sampler[j]).abs() for j in range(len(rows))])
    assert stats["rollout/sampler_logprob_abs_diff"] == pytest.approx(float(diffs.mean()), rel=1e-9)
    for key, value in losses.items():
        assert stats[key] == pytest.approx(value / len(minis), rel=1e-9, abs=1e-12), key


def test_ratio_one_without_kl_is_the_advantage_weighted_log_likelihood(model64):
    rows, adv = synthetic_rows(model64.config.vocab_size, seed=3)
    cfg = LossConfig(kl_coef=0.0, agg="token-mean")
    tokens = sum(len(r["response_ids"]) for r in rows)
    norm = Normalizer(tokens=float(tokens), sequences=float(len(rows)), max_len=10.0)
    model64.zero_grad(set_to_none=True)
    share = Share(rows, adv, torch.ones(len(rows)), norm, MicroSplit(2))
    accumulate_gradients(Policies(model64, None, 1.0, CPU), share, cfg)
    ours = grads(model64)

    # independent: one sequence at a time, plain log_softmax of the model's logits
    model64.zero_grad(set_to_none=True)
    total = torch.zeros((), dtype=torch.float64)
    for row, a in zip(rows, adv, strict=True):
        ids = torch.tensor([row["prompt_ids"] + row["response_ids"]])
        logits = model64(input_ids=ids).logits[0]
        start = len(row["prompt_ids"])
        for k, token in enumerate(row["response_ids"]):
            total = total - a * torch.log_softmax(logits[start + k - 1], -1)[token]
    (total / tokens).backward()
    for a, b in zip(ours, grads(model64), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_match_the_trainer(tiny_model, temperature):
    backend = TransformersBackend("fp32")
    backend.load(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in ("What is 2 + 2?", "Name the capital of a country you know well, please.")
    ]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len(prompts[0]) != len(prompts[1])  # left padding is exercised
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=12)
    groups = backend.generate(prompts, 3, sampling, seed=0)
    rows = [
        {"prompt_ids": prompt, "response_ids": s.token_ids, "sampling_logprobs": s.logprobs}
        for prompt, group in zip(prompts, groups, strict=True)
        for s in group
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    trainer = logprobs_of(model, rows, temperature, 4, CPU)
    for row, lp in zip(rows, trainer, strict=True):
        assert len(row["sampling_logprobs"]) == len(row["response_ids"]) == lp.shape[0]
        torch.testing.assert_close(lp, torch.tensor(row["sampling_logprobs"]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_from_the_response_positions_alone_equal_the_full_logits(model64, temperature):
    """token_logprobs asks the model for the logits of the positions that predict response
    tokens only (from the earliest response start on); rows whose prompts are longer or
    shorter read theirs at the right offsets: values, entropies and gradients equal those
    taken from the whole sequence's logits."""
    rows, _ = synthetic_rows(model64.config.vocab_size, count=5, seed=3)
    assert len({len(r["prompt_ids"]) for r in rows}) > 2  # the offsets are exercised
    b = collate(rows, CPU)
    model64.zero_grad(set_to_none=True)
    lp, ent = token_logprobs(
        model64, b.ids, b.attn, b.response_start, b.response_len, temperature, True
    )
    ((lp + ent) * b.mask).sum().backward()  # the response tokens' (the loss masks the rest)
    ours = grads(model64)

    model64.zero_grad(set_to_none=True)
    logits = model64(input_ids=b.ids, attention_mask=b.attn).logits / temperature
    full_lp, full_ent = [], []
    for i, row in enumerate(rows):
        start, length = len(row["prompt_ids"]), len(row["response_ids"])
        pred = torch.log_softmax(logits[i, start - 1 : start + length - 1], dim=-1)
        full_lp.append(pred.gather(-1, b.ids[i, start : start + length, None]).squeeze(-1))
        full_ent.append(-(pred.exp() * pred).sum(-1))
        torch.testing.assert_close(lp[i, :length], full_lp[-1], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ent[i, :length], full_ent[-1], rtol=1e-10, atol=1e-12)
    (torch.cat(full_lp).sum() + torch.cat(full_ent).sum()).backward()
    for a, c in zip(ours, grads(model64), strict=True):
        torch.testing.assert_close(a, c, rtol=1e-8, atol=1e-12)

"""Where grpo writes its policies (stages/grpo/publishing.py, policy.host_snapshot): on-policy in
its own thread, one step off-policy or more in a background thread while the next step trains.
The background publish must not lose an error, must write what the weights were when it was
asked to (not what the next update made of them), and must write the same folder as the
publish in the trainer's thread."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.peers import PeerWatch
from proactive_rl.shared.publish import verify
from proactive_rl.shared.schedule import Plan
from proactive_rl.stages.grpo.config import GrpoConfig
from proactive_rl.stages.grpo.policy import host_snapshot
from proactive_rl.stages.grpo.publishing import Publisher, publish_policy
from proactive_rl.stages.grpo.rollouts import wait_parts


def test_in_the_callers_thread_a_publish_is_done_when_submit_returns():
    publisher: Publisher[str] = Publisher(background=False)
    ran_in = []
    publisher.submit(lambda: ran_in.append(threading.current_thread()) or "policy 1")
    assert ran_in == [threading.current_thread()]
    assert publisher.finished() == ["policy 1"] and publisher.finished() == []
    assert publisher.wait() == 0.0


def test_a_background_publish_runs_while_the_caller_goes_on():
    publisher: Publisher[str] = Publisher(background=True)
    release, started = threading.Event(), threading.Event()

    def publish() -> str:
        started.set()
        assert release.wait(60)
        return "policy 1"

    publisher.submit(publish)  # returns while the publish is held
    assert started.wait(60) and publisher.finished() == []
    with pytest.raises(RuntimeError, match="still running"):
        publisher.submit(lambda: "policy 2")  # one at a time: the order of the markers
    release.set()
    publisher.wait()
    assert publisher.finished() == ["policy 1"]
    publisher.submit(lambda: "policy 2")
    publisher.close()
    assert publisher.finished() == ["policy 2"]


def test_a_background_publish_error_reaches_the_caller():
    publisher: Publisher[str] = Publisher(background=True)

    def publish() -> str:
        raise OSError(28, "No space left on device")

    publisher.submit(publish)
    deadline = time.monotonic() + 60
    with pytest.raises(OSError, match="No space left"):
        while time.monotonic() < deadline:  # check() raises once the thread has failed
            publisher.check()
            time.sleep(0.01)
    publisher = Publisher(background=True)
    publisher.submit(publish)
    with pytest.raises(OSError, match="No space left"):
        publisher.close()  # the run's last policy: its error is not lost either


def test_the_wait_for_rollouts_stops_when_the_background_publish_failed(tmp_path):
    """The rollout worker waits for the policy that failed: grpo must not wait an hour for
    rollouts that need it."""
    paths = RunPaths(tmp_path)
    plan = Plan("p", 8, "", 2, 2, 1, 0, 1)
    started = PeerWatch(paths.status("grpo").parent)

    def failed() -> None:
        raise OSError(28, "No space left on device")

    begin = time.monotonic()
    with pytest.raises(OSError, match="No space left"):
        wait_parts(GrpoConfig(wait_timeout=600), paths, plan, 0, started, failed)
    assert time.monotonic() - begin < 60


@pytest.fixture(scope="module")
def tied(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, tie_word_embeddings=True)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    return model


def test_a_snapshot_keeps_the_weights_as_they_were_and_tied_ones_shared(tied):
    snapshot = host_snapshot(tied, None, torch.bfloat16)
    before = {k: v.clone() for k, v in snapshot.items()}
    with torch.no_grad():
        for p in tied.parameters():
            p.add_(1.0)  # the next step's update, in place
    assert all(torch.equal(snapshot[k], before[k]) for k in snapshot)
    assert all(v.dtype == torch.bfloat16 for v in snapshot.values())
    embed = [k for k in snapshot if "embed_tokens" in k][0]
    assert snapshot["lm_head.weight"].data_ptr() == snapshot[embed].data_ptr()
    # empty tensors (ZeRO-3's placeholders) share an address but nothing else: none is tied
    empty = host_snapshot(tied, {"a": torch.empty(0), "b": torch.empty(0)}, None)
    assert empty["a"] is not empty["b"]


def test_a_policy_written_from_a_snapshot_is_the_policy_written_from_the_model(
    tied, tiny_model, tmp_path
):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    paths = RunPaths(tmp_path)
    publish_policy(tied, tokenizer, paths, 1, {}, tiny_model, publish_dtype=torch.bfloat16)
    snapshot = host_snapshot(tied, None, torch.bfloat16)
    publish_policy(tied, tokenizer, paths, 2, {}, tiny_model, state_dict=snapshot)
    live, snap = (load_file(paths.policy(v) / "model.safetensors") for v in (1, 2))
    assert live.keys() == snap.keys()
    # both against the weights converted here, tensor by tensor: the tied head written once
    converted = {k: v.to(torch.bfloat16) for k, v in tied.state_dict().items()}
    assert set(converted) - set(live) == {"lm_head.weight"}
    assert all(torch.equal(live[k], converted[k]) and torch.equal(snap[k], live[k]) for k in live)
    for version in (1, 2):
        verify(paths.policy(version))
    reloaded = AutoModelForCausalLM.from_pretrained(paths.policy(2))
    assert torch.equal(reloaded.lm_head.weight, reloaded.get_input_embeddings().weight)


def test_a_lora_adapter_written_from_a_snapshot_is_the_adapter_written_from_the_model(
    tiny_model, tmp_path
):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # a trained adapter: B is zero when fresh
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    paths = RunPaths(tmp_path / "run")
    publish_policy(model, tokenizer, paths, 1, {}, tiny_model)
    snapshot = host_snapshot(model, None, torch.bfloat16)  # an adapter is saved as it trains
    assert all(v.dtype == torch.float32 for v in snapshot.values())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    publish_policy(model, tokenizer, paths, 2, {}, tiny_model, state_dict=snapshot)
    live, snap = (load_file(paths.policy(v) / "adapter_model.safetensors") for v in (1, 2))
    assert live.keys() == snap.keys() and len(live) > 0
    assert all(torch.equal(live[k], snap[k]) for k in live)

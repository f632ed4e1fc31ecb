"""`proactive prep` on the users' formats: sampling, veRL parquet, idempotence, clear errors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from proactive_rl.shared.publish import read_marker
from proactive_rl.shared.schemas import RL_DATA, read_table
from tests.conftest import proactive


def test_prep_writes_sft_sample_and_verl_parquet(workdir):
    proactive("prep", "--set", "num_sft_samples=10", cwd=workdir)
    out = workdir / "data" / "processed"
    marker = read_marker(out)
    sft = [json.loads(line) for line in (out / "sft_train.jsonl").read_text().splitlines()]
    assert len(sft) == 10 and all(row["messages"][-1]["role"] == "assistant" for row in sft)

    source = (workdir / "data/sample/rl.jsonl").read_text().splitlines()
    train = read_table(out / "rl_train.parquet", RL_DATA).to_pylist()
    test = read_table(out / "rl_test.parquet", RL_DATA).to_pylist()
    assert len(train) + len(test) == len(source)
    assert len(test) == len(source) - int(len(source) * 0.95)  # 95/5 in file order
    assert marker["rows"] == {"sft_train": 10, "rl_train": len(train), "rl_test": len(test)}
    first = json.loads(source[0])
    assert train[0]["prompt"] == [
        {"role": "system", "content": "You are a helpful proactive assistant."},
        {"role": "user", "content": first["messages"][0]["content"]},
    ]
    truth = first["messages"][1]["content"]
    assert train[0]["reward_model"] == {"style": "rule", "ground_truth": truth}
    assert train[0]["ability"] == "reasoning" and train[0]["data_source"] == "sampleQA"
    assert test[-1]["extra_info"]["index"] == len(source) - 1


def test_prep_is_seeded_and_idempotent(workdir, tmp_path_factory):
    proactive("prep", "--set", "num_sft_samples=5", cwd=workdir)
    out = workdir / "data" / "processed"
    first = (out / "sft_train.jsonl").read_text()
    published = read_marker(out)["published_at"]
    again = proactive("prep", "--set", "num_sft_samples=5", cwd=workdir)
    assert "nothing to do" in again.stderr
    assert read_marker(out)["published_at"] == published
    # a different seed changes the sample, and a changed config is redone
    proactive("prep", "--set", "num_sft_samples=5", "--set", "seed=7", cwd=workdir)
    assert (out / "sft_train.jsonl").read_text() != first
    proactive("prep", "--set", "num_sft_samples=5", cwd=workdir)
    assert (out / "sft_train.jsonl").read_text() == first


def test_prep_reads_simpleqa_csv(workdir):
    csv = workdir / "simpleqa.csv"
    csv.write_text(
        "metadata,question,true_answer\n"
        '"{}","Who received the IEEE Frank Rosenblatt Award in 2010?",Michio Sugeno\n'
        '"{}","A question\nspanning two lines?",42\n'
        '"{}","Third?",three\n'
    )
    proactive("prep", "--set", f"rl_source={csv}", "--set", "test_fraction=0.3", cwd=workdir)
    train = pq.read_table(workdir / "data/processed/rl_train.parquet").to_pylist()
    test = pq.read_table(workdir / "data/processed/rl_test.parquet").to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in train] == ["Michio Sugeno", "42"]
    assert train[1]["prompt"][1]["content"] == "A question\nspanning two lines?"
    assert [r["reward_model"]["ground_truth"] for r in test] == ["three"]


def test_prep_bad_json_line_names_file_and_line(workdir):
    rl = workdir / "data/sample/rl.jsonl"
    lines = rl.read_text().splitlines()
    lines[2] = '{"id": 2, "messages": [broken'
    rl.write_text("\n".join(lines) + "\n")
    proc = proactive("prep", cwd=workdir, check=False)
    assert proc.returncode == 2
    assert f"{rl.relative_to(workdir)}:3: not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir / "data/processed").exists()  # nothing half-written


def test_prep_unknown_key_lists_valid_keys(workdir):
    proc = proactive("prep", "--set", "num_sft_sample=5", cwd=workdir, check=False)
    assert proc.returncode == 2
    assert "unknown key 'num_sft_sample'" in proc.stderr and "num_sft_samples" in proc.stderr

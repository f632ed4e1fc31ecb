"""`proactive prep` on the users' formats: sampling, veRL parquet, idempotence, clear errors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from proactive_rl.shared.publish import read_marker
from proactive_rl.shared.schemas import RL_DATA, read_table
from proactive_rl.shared.tags import parse_response
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


def test_an_empty_sft_file_does_not_replace_good_data(workdir):
    proactive("prep", cwd=workdir)
    out = workdir / "data/processed"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    empty = workdir / "data/sample/empty_sft.jsonl"
    empty.write_text("\n\n")
    proc = proactive("prep", "--set", f"sft_source={empty}", cwd=workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "empty_sft.jsonl holds no conversations" in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_prep_unknown_key_lists_valid_keys(workdir):
    proc = proactive("prep", "--set", "num_sft_sample=5", cwd=workdir, check=False)
    assert proc.returncode == 2
    assert "unknown key 'num_sft_sample'" in proc.stderr and "num_sft_samples" in proc.stderr


# ------------------------------------------------------------------ several RL sources, mixed


def _write_csv(path, n, columns=("question", "true_answer")):
    rows = "".join(f'"{{}}","SimpleQA question {i}?",answer {i}\n' for i in range(n))
    path.write_text(f"metadata,{columns[0]},{columns[1]}\n" + rows)
    return path


def _split(workdir):
    out = workdir / "data/processed"
    return (
        read_table(out / "rl_train.parquet", RL_DATA).to_pylist(),
        read_table(out / "rl_test.parquet", RL_DATA).to_pylist(),
    )


def test_prep_mixes_jsonl_and_csv_with_per_source_caps(workdir):
    csv = _write_csv(workdir / "simple_qa.csv", 30, ("problem", "answer"))
    args = ["prep", "--set", f'rl_source=["data/sample/rl.jsonl", "{csv}"]']
    args += ["--set", "rl_source_limits=[100, 20]", "--set", "test_fraction=0.1"]
    proactive(*args, cwd=workdir)
    train, test = _split(workdir)
    rows = train + test
    source = [json.loads(line) for line in (workdir / "data/sample/rl.jsonl").open()]
    assert len(rows) == 120  # the first 100 of the JSONL, then the first 20 of the CSV
    assert [r["extra_info"]["index"] for r in rows] == list(range(120))
    assert [r["extra_info"]["sub_category"] for r in rows[:100]] == [
        s["sub_category"] for s in source[:100]
    ]
    assert {r["extra_info"]["sub_category"] for r in rows[100:]} == {"simpleQA"}
    assert rows[100]["prompt"][1]["content"] == "SimpleQA question 0?"
    assert rows[119]["reward_model"]["ground_truth"] == "answer 19"
    assert [r["extra_info"]["original_id"] for r in rows[100:102]] == ["0", "1"]
    assert len(test) == 12 and {r["extra_info"]["sub_category"] for r in test} == {"simpleQA"}
    marker = read_marker(workdir / "data/processed")
    assert [s["questions"] for s in marker["rl_sources"]] == [100, 20]
    assert marker["rl_sub_categories"]["test"] == {"simpleQA": 12}
    # relative to the data directory inside it, absolute outside
    assert marker["inputs"]["rl"] == ["sample/rl.jsonl", str(csv)]

    # every source is an input of the fingerprint: editing the second one redoes the work
    assert "nothing to do" in proactive(*args, cwd=workdir).stderr
    csv.write_text(csv.read_text().replace("answer 19", "answer nineteen"))
    assert "nothing to do" not in proactive(*args, cwd=workdir).stderr
    assert _split(workdir)[1][-1]["reward_model"]["ground_truth"] == "answer nineteen"


def test_prep_shuffle_mixes_the_split_reproducibly(workdir):
    csv = _write_csv(workdir / "simple_qa.csv", 100)
    args = ["prep", "--set", f'rl_source=["data/sample/rl.jsonl", "{csv}"]']
    args += ["--set", "shuffle_rl=true", "--set", "test_fraction=0.2"]
    proactive(*args, cwd=workdir)
    train, test = _split(workdir)
    kinds = {r["extra_info"]["sub_category"] for r in test}
    assert {"simpleQA", "arithmetic", "obscure"} <= kinds  # both sources in the test split
    indexes = [r["extra_info"]["index"] for r in train + test]
    assert sorted(indexes) == list(range(400)) and indexes != sorted(indexes)
    proactive(*args, "--force", cwd=workdir)
    assert _split(workdir) == (train, test)  # same seed, same split
    proactive(*args, "--set", "seed=1", cwd=workdir)
    assert _split(workdir)[1] != test


def test_prep_reads_gzipped_simpleqa(workdir):
    import gzip

    plain = _write_csv(workdir / "s.csv", 5)
    packed = workdir / "s.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    proactive("prep", "--set", f"rl_source={packed}", "--set", "test_fraction=0.2", cwd=workdir)
    train, test = _split(workdir)
    assert [r["reward_model"]["ground_truth"] for r in train + test] == [
        f"answer {i}" for i in range(5)
    ]


# ------------------------------------------------------------------ warm-up conversations


def _sft(workdir):
    text = (workdir / "data/processed/sft_train.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_prep_builds_warmup_sft_from_train_questions_only(workdir):
    args = ["prep", "--set", "sft_source=build", "--set", "num_sft_samples=1000"]
    proactive(*args, cwd=workdir)
    train, test = _split(workdir)
    sft = _sft(workdir)
    train_q = {r["prompt"][1]["content"]: r for r in train}
    test_q = {r["prompt"][1]["content"] for r in test}
    assert len(sft) == len(train)  # fewer than num_sft_samples: all of them
    for row in sft:
        assert set(row) == {"messages", "id", "sub_category"}
        system, user, assistant = row["messages"]
        assert (system["role"], user["role"], assistant["role"]) == ("system", "user", "assistant")
        assert user["content"] in train_q and user["content"] not in test_q
        record = train_q[user["content"]]
        assert row["id"] == record["extra_info"]["index"]
        assert row["sub_category"] == record["extra_info"]["sub_category"]
        parsed = parse_response(assistant["content"])
        known = row["sub_category"] in ("arithmetic", "general")
        assert parsed.think and parsed.proactive is (not known)
        if known:
            assert parsed.formal == record["reward_model"]["ground_truth"]
    marker = read_marker(workdir / "data/processed")
    n_known = sum(r["extra_info"]["sub_category"] != "obscure" for r in train)
    assert marker["warmup"]["built"] == {"known": n_known, "proactive": len(train) - n_known}
    assert marker["inputs"]["sft"] == "build" and marker["rows"]["sft_train"] == len(train)

    # a sample, balanced, is seeded and idempotent
    args = ["prep", "--set", "sft_source=build", "--set", "proactive_fraction=0.5"]
    proactive(*args, "--set", "num_sft_samples=20", cwd=workdir)
    first = (workdir / "data/processed/sft_train.jsonl").read_text()
    assert sum(parse_response(r["messages"][-1]["content"]).proactive for r in _sft(workdir)) == 10
    again = proactive(*args, "--set", "num_sft_samples=20", cwd=workdir)
    assert "nothing to do" in again.stderr
    proactive(*args, "--set", "num_sft_samples=20", "--force", cwd=workdir)
    assert (workdir / "data/processed/sft_train.jsonl").read_text() == first


def test_prep_build_decides_known_from_measured_accuracy(workdir):
    rows = [json.loads(line) for line in (workdir / "data/sample/rl.jsonl").open()]
    arithmetic = next(i for i, r in enumerate(rows) if r["sub_category"] == "arithmetic")
    obscure = next(i for i, r in enumerate(rows) if r["sub_category"] == "obscure")
    samples = workdir / "samples.jsonl"
    measured = [(arithmetic, [False, False, True, False]), (obscure, [True, True, False, True])]
    lines = []
    for checkpoint in ("base", "sft"):
        for index, correct in measured:
            for c in correct:
                question = rows[index]["messages"][0]["content"]
                lines.append(
                    {"checkpoint": checkpoint, "question_index": index, "question": question}
                    | {"correct": c if checkpoint == "base" else not c}
                )
    samples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["prep", "--set", "sft_source=build", "--set", f"known_from={samples}"]
    args += ["--set", "num_sft_samples=1000"]
    proc = proactive(*args, cwd=workdir)
    assert "2 decided by measured accuracy" in proc.stderr
    by_id = {row["id"]: parse_response(row["messages"][-1]["content"]) for row in _sft(workdir)}
    assert by_id[arithmetic].proactive  # measured 1/4 < 0.5: treated as unknown
    assert not by_id[obscure].proactive  # measured 3/4: known, plain gold answer
    assert by_id[obscure].formal == rows[obscure]["messages"][1]["content"]
    warmup = read_marker(workdir / "data/processed")["warmup"]
    assert warmup["decided_by"]["measured"] == 2 and warmup["known_checkpoint"] == "base"

    proactive(*args, "--set", "known_checkpoint=sft", cwd=workdir)
    by_id = {row["id"]: parse_response(row["messages"][-1]["content"]) for row in _sft(workdir)}
    assert not by_id[arithmetic].proactive and by_id[obscure].proactive

    # the measured file is an input: editing it redoes the work
    samples.write_text(samples.read_text().replace('"correct": false', '"correct": true'))
    assert "nothing to do" not in proactive(*args, cwd=workdir).stderr


def _measured(workdir, questions, known):
    """A measurement file as `eval --set split=train` writes it: one sample per question,
    correct exactly for the `known` ones."""
    samples = workdir / "samples.jsonl"
    samples.write_text(
        "".join(
            json.dumps({"question_index": i, "correct": i in known}) + "\n"
            for i in range(questions)
        )
    )
    return samples


def test_prep_rl_known_fraction_balances_grpo_pool(workdir):
    """rl_known_fraction reorders only the train split: its head mixes measured-known and
    unknown questions at the fraction asked, the test split stays as it was."""
    rows = [json.loads(line) for line in (workdir / "data/sample/rl.jsonl").open()]
    args = ["prep", "--set", "sft_source=build", "--set", "known_categories=[]"]
    proactive(*args, cwd=workdir)
    train_before, test_before = _split(workdir)
    known = [r["extra_info"]["index"] for r in train_before[-6:]]  # the tail, as measured
    samples = _measured(workdir, len(rows), known)
    args += ["--set", f"known_from={samples}", "--set", "rl_known_fraction=0.5"]
    proc = proactive(*args, cwd=workdir)
    assert "6 known of" in proc.stderr and "first 12 rows hold 50% known" in proc.stderr
    train, test = _split(workdir)
    assert test == test_before
    index = [r["extra_info"]["index"] for r in train]
    assert sorted(index) == sorted(r["extra_info"]["index"] for r in train_before)
    assert [i in known for i in index[:4]] == [True, False, True, False]
    assert sum(i in known for i in index[:12]) == 6
    order = read_marker(workdir / "data/processed")["warmup"]["rl_train_order"]
    assert order == {"known": 6, "rows": len(train), "balanced_prefix": 12}

    proc = proactive("prep", "--set", "rl_known_fraction=0.5", cwd=workdir, check=False)
    assert proc.returncode == 2 and "rl_known_fraction needs known_from" in proc.stderr


def test_prep_rl_known_within_kinds_balances_every_kind_of_the_pool(workdir):
    """rl_known_within_kinds: the lead of the train split holds known and unknown questions at
    the fraction asked within each kind, so the kind of a pool question does not say whether it
    is known; kinds with no known question (obscure here) follow the lead."""
    rows = [json.loads(line) for line in (workdir / "data/sample/rl.jsonl").open()]
    args = ["prep", "--set", "sft_source=build", "--set", "known_categories=[]"]
    proactive(*args, cwd=workdir)
    train_before, test_before = _split(workdir)
    kind = {r["extra_info"]["index"]: rows[r["extra_info"]["index"]]["sub_category"]
            for r in train_before}  # fmt: skip
    arithmetic = [i for i in kind if kind[i] == "arithmetic"]
    general = [i for i in kind if kind[i] == "general"]
    known = set(arithmetic[:6] + general[:2])
    samples = _measured(workdir, len(rows), known)
    args += ["--set", f"known_from={samples}", "--set", "rl_known_fraction=0.5"]
    proc = proactive(*args, "--set", "rl_known_within_kinds=true", cwd=workdir)
    assert "balanced within each kind: arithmetic 12, general 4" in proc.stderr
    train, test = _split(workdir)
    assert test == test_before
    index = [r["extra_info"]["index"] for r in train]
    assert sorted(index) == sorted(kind)
    lead = index[:16]
    for name, size in (("arithmetic", 12), ("general", 4)):
        of_kind = [i for i in lead if kind[i] == name]
        assert len(of_kind) == size and sum(i in known for i in of_kind) == size // 2
    # interleaved in proportion: the first 8 hold both kinds, each half known
    assert sorted(kind[i] for i in index[:8]) == ["arithmetic"] * 6 + ["general"] * 2
    order = read_marker(workdir / "data/processed")["warmup"]["rl_train_order"]
    assert order["balanced_prefix"] == 16
    assert order["lead_by_kind"] == {"arithmetic": 12, "general": 4}

    # one balance over the whole split puts every known question at the head, by kind:
    # all 8 known ones in the first 16, beside obscure questions never known
    proactive(*args, cwd=workdir)
    index = [r["extra_info"]["index"] for r in _split(workdir)[0]]
    assert sum(i in known for i in index[:16]) == 8
    assert any(kind[i] == "obscure" for i in index[:16])

    proc = proactive("prep", "--set", "rl_known_within_kinds=true", cwd=workdir, check=False)
    assert proc.returncode == 2 and "rl_known_within_kinds needs rl_known_fraction" in proc.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"question_index": 0, "correct": true}\n{"question_index": 1',
            "samples.jsonl:2: not valid JSON",
        ),
        (
            '{"question_index": 0, "correct": true}\n{"question_index": 1}\n',
            "samples.jsonl:2: needs a boolean 'correct'",
        ),
        (
            '{"question_index": 9999, "correct": true}\n',
            "samples.jsonl:1: question_index 9999 is not in the RL data",
        ),
    ],
)
def test_prep_bad_known_from_names_file_and_line(workdir, content, message):
    (workdir / "samples.jsonl").write_text(content)
    args = ["prep", "--set", "sft_source=build", "--set", "known_from=samples.jsonl"]
    proc = proactive(*args, cwd=workdir, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir / "data/processed").exists()


def test_prep_known_options_need_build(workdir):
    proc = proactive("prep", "--set", "known_threshold=0.7", cwd=workdir, check=False)
    assert proc.returncode == 2 and "used only with sft_source=build" in proc.stderr
    proc = proactive("prep", "--set", "rl_source_limits=[1, 2]", cwd=workdir, check=False)
    assert proc.returncode == 2 and "one limit (or null) per file" in proc.stderr


def test_prep_build_skips_test_rows_borrowed_from_train(workdir):
    # test_fraction=0: the test split borrows the last train rows; none may become SFT
    args = ["prep", "--set", "sft_source=build", "--set", "num_sft_samples=1000"]
    proactive(*args, "--set", "test_fraction=0", cwd=workdir)
    train, test = _split(workdir)
    test_q = {r["prompt"][1]["content"] for r in test}
    sft = _sft(workdir)
    assert len(test) == 4 and len(sft) == len(train) - 4
    assert not test_q & {row["messages"][1]["content"] for row in sft}

"""`proactive eval` through the real CLI on a small run of the tiny model (prep, two SFT epochs,
two RL epochs of one step): several checkpoints side by side in one published report folder."""

from __future__ import annotations

import json
import shutil

import pytest

from proactive_rl.shared.errors import UserError
from proactive_rl.shared.metrics import read_metrics
from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.publish import (
    is_stable,
    publish_dir,
    read_marker,
    staging_dir,
    verify,
)
from proactive_rl.shared.rewards import proactive_reward
from proactive_rl.stages.eval.checkpoints import resolve_checkpoints
from proactive_rl.stages.eval.optimum import action_table
from tests.conftest import REPO, proactive, start

N = 2
TEST_QUESTIONS = 4  # 16 rows, 25% test
FAST = ["--set", f"n={N}", "--set", "sampling.max_new_tokens=8"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    """prep -> sft (2 epochs) -> grpo + rollout (2 epochs of 1 step) on the tiny model."""
    workdir = tmp_path_factory.mktemp("eval")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    proactive(
        "prep",
        "--set",
        "max_rl_rows=16",
        "--set",
        "test_fraction=0.25",
        "--set",
        "num_sft_samples=8",
        cwd=workdir,
    )
    common = ["--run-dir", "run"]
    proactive(
        "sft",
        *common,
        "--set",
        f"base_model={tiny_model}",
        "--set",
        "epochs=2",
        "--set",
        "max_length=96",
        "--set",
        "per_device_batch_size=8",
        cwd=workdir,
    )
    grpo = start(
        "grpo",
        *common,
        "--set",
        "epochs=2",
        "--set",
        "prompts_per_step=12",
        "--set",
        "n=2",
        "--set",
        "learning_rate=1e-3",
        cwd=workdir,
    )
    rollout = start(
        "rollout",
        *common,
        "--set",
        "sampling.max_new_tokens=8",
        "--set",
        "num_examine=0",
        cwd=workdir,
    )
    out_r, _ = rollout.communicate(timeout=600)
    out_g, _ = grpo.communicate(timeout=600)
    assert rollout.returncode == 0, out_r
    assert grpo.returncode == 0, out_g
    return workdir, RunPaths(workdir / "run")


@pytest.fixture(scope="module")
def compared(run):
    """One report over the base model, every SFT epoch and the end of every RL epoch."""
    workdir, paths = run
    proactive(
        "eval",
        "--run-dir",
        "run",
        "--set",
        "checkpoints=base,sft:all,rl:epochs",
        "--set",
        "name=all",
        *FAST,
        cwd=workdir,
    )
    return paths, paths.eval_dir("all")


LABELS = ["base", "sft_epoch_1", "sft_epoch_2", "policy_1", "policy_2"]


def test_report_compares_every_named_checkpoint(compared):
    paths, folder = compared
    assert is_stable(folder)
    verify(folder)
    report = json.loads((folder / "report.json").read_text())
    for key in ("settings", "seeds", "seconds", "checkpoints", "training", "acceptance"):
        assert key in report
    assert report["questions"] == TEST_QUESTIONS and report["n"] == N
    eval_settings = report["settings"]["eval"]
    assert (eval_settings["reward"], eval_settings["reward_kwargs"]) == ("proactive", {"beta": 0.5})
    threshold = action_table(proactive_reward, {"beta": 0.5}, N).threshold()
    assert [c["label"] for c in report["checkpoints"]] == LABELS
    assert [c["spec"] for c in report["checkpoints"]] == ["base"] + ["sft:all"] * 2 + [
        "rl:epochs"
    ] * 2
    assert report["seeds"] == {"eval": 7, "sft": 42, "grpo": 42, "rollout": 1234}
    assert set(report["settings"]["stages"]) == {"sft", "grpo", "rollout"}
    for entry in report["checkpoints"]:
        m = entry["metrics"]
        assert m["samples"] == TEST_QUESTIONS * N
        assert m["correct"] + m["incorrect"] + m["not_attempted"] == m["samples"]
        for key, value in m.items():
            if key.endswith("_rate") or key in ("accuracy", "accuracy_given_attempted", "f_score"):
                assert 0.0 <= value <= 1.0, key
        assert m["accuracy"] <= m["accuracy_given_attempted"] or m["not_attempted"] == 0
        assert 0 < m["mean_response_tokens"] <= 8
        assert sum(b["questions"] for b in entry["buckets"].values()) == TEST_QUESTIONS
        assert set(entry["calibration"]) == {
            "hardest_proactive_rate",
            "easiest_proactive_rate",
            "ratio",
        }
        # against the reward's own optimum: the training reward (proactive, beta 0.5) at n
        optimum = entry["optimum"]
        assert optimum["threshold"] == pytest.approx(threshold)
        assert optimum["rational_hallucination_rate"] + optimum[
            "mistaken_hallucination_rate"
        ] == pytest.approx(m["hallucination_rate"])
        counts = ("p_from_own", "p_from_base", "p_from_none")
        assert sum(optimum[k] for k in counts) == optimum["questions"] == TEST_QUESTIONS
        assert optimum["reward_earned"] <= optimum["reward_best"] + 1e-12
    curve = report["training"]["curve"]
    assert curve["steps"] == [0, 1] and len(curve["reward_mean"]) == 2
    assert isinstance(curve["reward_improved"], bool)
    assert [c["id"] for c in report["acceptance"]] == [
        "sft_format",
        "rl_reward_rises",
        "final_calibration",
        "final_hallucination_below_sft",
        "goal_hallucination",
        "goal_accuracy_kept",
        "goal_truthfulness",
        "goal_hedges_where_base_fails",
    ]
    assert report["acceptance"][0]["checkpoint"] == "sft_epoch_2"
    assert report["acceptance"][3]["checkpoint"] == "policy_2"


def test_the_base_models_oracle_frontier_under_each_grader(compared):
    """What hedging alone could reach with the base's knowledge, recomputed from its samples:
    in report.json (base only), report.md and metrics.jsonl."""
    paths, folder = compared
    report = json.loads((folder / "report.json").read_text())
    base = report["checkpoints"][0]
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    own = [s for s in samples if s["checkpoint"] == "base"]
    for grader, key in (("substring", "grade"), ("normalised", "grade_normalised")):
        view = base["oracle_frontier"][grader]
        right = sum(s[key] == "correct" for s in own) / len(own)
        assert view["base_accuracy"] == pytest.approx(right)
        assert view["questions"] == TEST_QUESTIONS
        assert 0 <= view["best_accuracy_within_hallucination_max"] <= view["base_accuracy"]
        assert view["accuracy_goal"] == pytest.approx(0.8 * right)
    assert all("oracle_frontier" not in c for c in report["checkpoints"][1:])
    assert "## What hedging alone could reach" in (folder / "report.md").read_text()
    logged = [r for r in read_metrics(paths.logs("eval")) if r.get("report") == "all"]
    first = next(r for r in logged if r["checkpoint"] == "base")
    assert first["oracle_frontier/normalised/base_accuracy"] == pytest.approx(
        base["oracle_frontier"]["normalised"]["base_accuracy"]
    )


def test_every_checkpoints_self_consistency_frontier(compared):
    """Hedging by the agreement of each checkpoint's own samples (stages/eval/frontier.py):
    answering at every threshold (k >= 0) is the checkpoint as sampled; the goal is the base's."""
    paths, folder = compared
    report = json.loads((folder / "report.json").read_text())
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    base = report["checkpoints"][0]["oracle_frontier"]["normalised"]["base_accuracy"]
    for ck in report["checkpoints"]:
        view = ck["consistency_frontier"]["normalised"]
        own = [s for s in samples if s["checkpoint"] == ck["label"]]
        answered = [s for s in own if s["grade_normalised"] != "not_attempted"]
        assert view["samples"] == len(own)
        assert view["accuracy_goal"] == pytest.approx(0.8 * base)
        if answered:
            every = view["thresholds"][-1]
            assert every["min_support"] == 0
            assert every["accuracy"] == pytest.approx(
                sum(s["grade_normalised"] == "correct" for s in own) / len(own)
            )
            assert every["hallucination"] == pytest.approx(
                sum(s["grade_normalised"] == "incorrect" for s in own) / len(own)
            )
        assert 0 <= view["best_accuracy_within_hallucination_max"] <= 1
    assert "## What the model's own agreement could reach" in (folder / "report.md").read_text()
    logged = [r for r in read_metrics(paths.logs("eval")) if r.get("report") == "all"]
    assert all("consistency_frontier/normalised/best_truthfulness" in r for r in logged)


def test_markdown_samples_plots_and_metrics_log(compared):
    paths, folder = compared
    text = (folder / "report.md").read_text()
    for label in LABELS:
        assert label in text
    assert "## Acceptance" in text and "hardest" in text and "RL training curve" in text
    assert "## Against the reward's own optimum" in text and "rational hallucinations" in text
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == TEST_QUESTIONS * N * len(LABELS)
    assert {r["checkpoint"] for r in rows} == set(LABELS)
    for r in rows:
        assert r["grade"] in ("correct", "incorrect", "not_attempted")
        assert r["correct"] == (r["grade"] == "correct")  # what prep's known_from reads
        assert r["bucket"] in ("hardest", "hard", "easy", "easiest")
    for name in ("grades.png", "proactive_by_difficulty.png", "rl_curves.png"):
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    logged = [m for m in read_metrics(paths.logs("eval")) if m["report"] == "all"]
    assert [m["checkpoint"] for m in logged] == LABELS
    assert all(0.0 <= m["eval/accuracy"] <= 1.0 for m in logged)
    assert all(0.0 <= m["optimum/best_action_rate"] <= 1.0 for m in logged)


def test_default_compares_base_sft_and_final(run):
    workdir, paths = run
    proactive("eval", "--run-dir", "run", *FAST, "--set", "max_questions=2", cwd=workdir)
    report = json.loads(paths.eval_report("report").read_text())
    assert [c["label"] for c in report["checkpoints"]] == ["base", "sft_epoch_2", "policy_2"]
    assert report["questions"] == 2
    # a second start does not silently overwrite the published report
    again = proactive("eval", "--run-dir", "run", *FAST, cwd=workdir, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert "Traceback" not in again.stderr
    resumed = proactive("eval", "--run-dir", "run", "--resume", *FAST, cwd=workdir)
    assert "nothing to do" in resumed.stderr


def test_a_run_is_read_from_any_folder(run, tmp_path):
    """Markers name folders relative to the run directory: eval from another working folder
    finds the base model (it took policy 0's cwd-relative SFT path for the base model once)."""
    workdir, paths = run
    assert read_marker(paths.policy(0))["init_model"] == "sft/epoch_000002"
    proactive(
        "eval", "--run-dir", str(workdir / "run"), "--data-dir", str(workdir / "data"), *FAST,
        "--set", "checkpoints=base,final", "--set", "max_questions=1", "--set", "name=elsewhere",
        cwd=tmp_path,
    )  # fmt: skip
    report = json.loads(paths.eval_report("elsewhere").read_text())
    assert [(c["label"], c["path"]) for c in report["checkpoints"]] == [
        ("base", str(read_marker(paths.sft_epoch(2))["base_model"])),
        ("policy_2", "policies/step_000002"),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("policy:99", "policy version 99 is not published"),
        ("sft:7", "SFT epoch 7 is not published"),
        ("final,policy:x", "'x' is not a number"),
        ("sfft", "unknown checkpoint 'sfft'"),
        # it used to advise setting BASE_MODEL_PATH
        ("./no/such/model", "no/such/model is not a folder; pass the folder of a Hugging Face"),
    ],
)
def test_a_missing_named_checkpoint_fails_cleanly(run, spec, message):
    workdir, paths = run
    proc = proactive(
        "eval",
        "--run-dir",
        "run",
        "--set",
        f"checkpoints={spec}",
        "--set",
        "name=missing",
        cwd=workdir,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not paths.eval_dir("missing").exists()


def test_an_empty_run_has_nothing_to_evaluate(workdir):
    proc = proactive("eval", "--run-dir", "empty", cwd=workdir, check=False)
    assert proc.returncode == 2 and "nothing to evaluate" in proc.stderr
    assert "Traceback" not in proc.stderr


def copy_model(tiny_model, folder, meta=None):
    """A published copy of the tiny model at `folder` (published when `meta` is given)."""
    if meta is None:
        shutil.copytree(tiny_model, folder)
        return
    staging = staging_dir(folder)
    shutil.copytree(tiny_model, staging, dirs_exist_ok=True)
    publish_dir(staging, folder, meta)


def test_resolution_skips_duplicates_and_unpublished_folders(tmp_path, tiny_model):
    paths = RunPaths(tmp_path / "run")
    base = tmp_path / "base"
    copy_model(tiny_model, base)
    copy_model(tiny_model, paths.policy(0), {"init_model": str(base)})
    copy_model(tiny_model, paths.policy(1), {})
    paths.policy(2).mkdir()  # unpublished: no STABLE.json
    found = resolve_checkpoints(None, paths)  # no SFT in this run: skipped
    assert [(c.label, c.path) for c in found] == [
        ("base", base.resolve()),
        ("policy_1", paths.policy(1)),
    ]
    # the same folder twice is evaluated once; a folder named like a label gets a suffix
    other = tmp_path / "policy_1"
    copy_model(tiny_model, other)
    specs = ["final", "policy:1", str(base), "policies:all", str(other)]
    found = resolve_checkpoints(specs, paths)
    assert [c.label for c in found] == ["policy_1", "base", "policy_0", "policy_1_2"]
    with pytest.raises(UserError, match="no published SFT epoch"):
        resolve_checkpoints(["sft"], paths)


def test_a_recorded_base_model_that_is_gone_is_named(tmp_path, tiny_model):
    paths = RunPaths(tmp_path / "run")
    copy_model(tiny_model, paths.policy(0), {"init_model": str(tmp_path / "gone")})
    with pytest.raises(UserError, match=r"recorded in .*STABLE.json .* is not a folder here"):
        resolve_checkpoints(["base"], paths)


@pytest.mark.parametrize("pruned", [False, True])
def test_a_sweep_run_names_the_shared_sft_and_its_base(tmp_path, tiny_model, pruned):
    """A sweep's RL run starts from another run's SFT epoch: `sft` and `base` name that epoch
    and its base model, also once keep_policies has pruned policy 0 (found by
    make bench-rewards: its runs keep 2 policies of 25)."""
    base = tmp_path / "base"
    copy_model(tiny_model, base)
    shared = RunPaths(tmp_path / "sweep" / "sft-1")
    copy_model(tiny_model, shared.sft_epoch(3), {"base_model": str(base)})
    paths = RunPaths(tmp_path / "sweep" / "run")
    copy_model(tiny_model, paths.policy(0), {"init_model": str(shared.sft_epoch(3))})
    copy_model(tiny_model, paths.policy(25), {})
    paths.plan.write_text("{}")
    paths.config("grpo").parent.mkdir(parents=True, exist_ok=True)
    paths.config("grpo").write_text(json.dumps({"init_model": str(shared.sft_epoch(3))}))
    if pruned:
        shutil.rmtree(paths.policy(0))
    found = resolve_checkpoints(["base", "sft", "final"], paths)
    assert [(c.label, c.path.resolve()) for c in found] == [
        ("base", base.resolve()),
        ("sft_epoch_3", shared.sft_epoch(3).resolve()),
        ("policy_25", paths.policy(25).resolve()),
    ]


def _samples(folder):
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def test_kept_responses_are_graded_again_with_another_reward(run, tmp_path):
    """sample_cache: a second eval of the same checkpoints and sampling grades the responses the
    first one sampled with its own reward (a sweep's runs share base and SFT so); another seed
    is another sample."""
    workdir, paths = run
    cache = ["--set", f"sample_cache={tmp_path / 'kept'}", "--set", "checkpoints=base,sft"]
    common = ["eval", "--run-dir", "run", *FAST, *cache]
    proactive(*common, "--set", "name=first", cwd=workdir)
    assert len(list((tmp_path / "kept").glob("*.json"))) == 2  # one file per checkpoint
    proactive(*common, "--set", "name=again", "--set", "reward=ternary", cwd=workdir)
    proactive(*common, "--set", "name=other_seed", "--set", "seed=8", cwd=workdir)

    first, again = _samples(paths.eval_dir("first")), _samples(paths.eval_dir("again"))
    assert [s["response"] for s in again] == [s["response"] for s in first]
    assert [s["response_tokens"] for s in again] == [s["response_tokens"] for s in first]
    # graded with ternary: 0 for a hedge, else +1 / -1 by the recipe's grade
    expected = [0.0 if s["proactive"] else (1.0 if s["correct"] else -1.0) for s in again]
    assert [s["reward"] for s in again] == expected
    assert any(s["reward"] != f["reward"] for s, f in zip(again, first, strict=True))

    def kept_in(name):
        report = json.loads(paths.eval_report(name).read_text())
        return [c["responses_kept_in"] for c in report["checkpoints"]]

    assert kept_in("first") == [None, None]
    assert all(str(tmp_path / "kept") in kept for kept in kept_in("again"))
    assert "kept in" in (paths.eval_dir("again") / "report.md").read_text()
    assert kept_in("other_seed") == [None, None]
    assert len(list((tmp_path / "kept").glob("*.json"))) == 4


def test_a_cache_key_follows_the_model_files_and_the_sampling(tmp_path, tiny_model):
    """Anything that decides the responses is in the key: a model file's bytes (a folder
    without a marker: its size and time), a published folder's checksums, the sampling."""
    from proactive_rl.stages.eval.config import EvalConfig
    from proactive_rl.stages.eval.sample_cache import cache_key

    records = [{"extra_info": {"index": 3}, "prompt": [{"role": "user", "content": "Q?"}]}]
    config = EvalConfig()
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    key = cache_key(model, records, config, "vllm")
    assert cache_key(model, records, config, "vllm") == key
    assert cache_key(model, records, config, "transformers") != key
    assert cache_key(model, records, EvalConfig(seed=8), "vllm") != key
    hotter = EvalConfig.model_validate({"sampling": {"temperature": 0.5}})
    assert cache_key(model, records, hotter, "vllm") != key
    other = [{**records[0], "prompt": [{"role": "user", "content": "Q2?"}]}]
    assert cache_key(model, other, config, "vllm") != key
    with open(model / "config.json", "a") as fh:
        fh.write(" ")
    assert cache_key(model, records, config, "vllm") != key

    # a published copy is known by its checksums, wherever it lies
    first, second, changed = tmp_path / "a" / "m", tmp_path / "b" / "m", tmp_path / "c" / "m"
    for folder in (first, second):
        copy_model(tiny_model, folder, {})
    copy_model(model, changed, {})
    assert cache_key(first, records, config, "vllm") == cache_key(second, records, config, "vllm")
    assert cache_key(first, records, config, "vllm") != cache_key(changed, records, config, "vllm")


def test_a_partial_cache_file_is_sampled_again(tmp_path):
    from proactive_rl.engine.generation import Sample
    from proactive_rl.stages.eval.sample_cache import load_groups, save_groups

    path = tmp_path / "k.json"
    save_groups(path, [[Sample([1, 2], [-0.1, -0.2], "stop")]], "base", tmp_path)
    assert load_groups(path, 1) == [[Sample([1, 2], [], "stop")]]
    assert load_groups(path, 2) is None  # other questions: not these responses
    path.write_text(path.read_text()[:20])
    assert load_groups(path, 1) is None
    assert load_groups(tmp_path / "absent.json", 1) is None

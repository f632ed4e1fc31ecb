"""Bad input at the edge, through the real CLI: one row per class of input (docs/reliability.md),
each a stage command and a damaged or wrong input. Every row must end in one message naming
what is wrong (exit code 2, no traceback) with nothing written: the data and run directories
are byte for byte as before (a worker's own status file aside, which tells its peer it failed).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from proactive_rl.shared.paths import RunPaths
from proactive_rl.shared.publish import publish_dir, staging_dir
from tests.conftest import REPO, command, proactive


@dataclass(frozen=True)
class Row:
    id: str
    args: tuple[str, ...]  # the stage, then its arguments; "{bad}": the row's bad inputs
    fragment: str  # what the message must say
    setup: Callable[[Path, Path, RunPaths], None] = lambda bad, tiny, run: None


# --- bad inputs, each made in the row's own folder --------------------------------------------


def model_copy(bad: Path, tiny: Path) -> Path:
    shutil.copytree(tiny, bad / "model", dirs_exist_ok=True)
    return bad / "model"


def truncated_weights(bad, tiny, run):
    weights = model_copy(bad, tiny) / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)


def garbage_config(bad, tiny, run):
    (model_copy(bad, tiny) / "config.json").write_text("model_type: qwen3\n")


def config_of_no_model(bad, tiny, run):
    (model_copy(bad, tiny) / "config.json").write_text("{}")


def no_tokenizer(bad, tiny, run):
    (model_copy(bad, tiny) / "tokenizer.json").unlink()


def garbage_tokenizer(bad, tiny, run):
    (model_copy(bad, tiny) / "tokenizer.json").write_text('{"version": "1.0", "model": 7}')


def no_weights(bad, tiny, run):
    (model_copy(bad, tiny) / "model.safetensors").unlink()


def published_copy(tiny: Path, folder: Path, meta: dict) -> Path:
    staging = staging_dir(folder)
    shutil.copytree(tiny, staging, dirs_exist_ok=True)
    publish_dir(staging, folder, meta)
    return folder


def damaged_sft_epoch(bad, tiny, run):
    epoch = published_copy(tiny, run.sft_epoch(1), {"epoch": 1, "base_model": str(tiny)})
    (epoch / "tokenizer.json").write_text("{")


def damaged_policy(bad, tiny, run):
    policy = published_copy(tiny, run.policy(0), {"version": 0, "init_model": str(tiny)})
    (policy / "config.json").write_text("")


def huge_model(bad, tiny, run):
    """A model whose one declared tensor is half the free disk: a sparse file, so it takes no
    space, and a valid header, so only the free-space check can refuse it."""
    folder = model_copy(bad, tiny)
    size = shutil.disk_usage(bad).free // 2 // 4 * 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}})
    with open(folder / "model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header.encode())
        fh.truncate(8 + len(header) + size)


def one_question(bad, tiny, run):
    bad.mkdir(parents=True, exist_ok=True)
    first = (REPO / "data/sample/rl.jsonl").read_text().splitlines()[0]
    (bad / "rl.jsonl").write_text(first + "\n")


def csv_header_only(bad, tiny, run):
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "simple_qa.csv").write_text("problem,answer\n")


def csv_empty_question(bad, tiny, run):
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "simple_qa.csv").write_text('problem,answer\n"Who?",Ann\n"  ",Bob\n')


def latin1(bad, tiny, run):
    bad.mkdir(parents=True, exist_ok=True)
    line = '{"messages": [{"role": "user", "content": "Caf\xe9?"}, ' + (
        '{"role": "assistant", "content": "yes"}]}\n'
    )
    (bad / "rl.jsonl").write_bytes(line.encode("latin-1"))


def blank_sft(bad, tiny, run):
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "sft.jsonl").write_text("\n\n")


MODEL = "{bad}/model"
ROWS = [
    # model folders: base model (sft), starting model (grpo), SFT epoch, policy, eval folders
    Row("truncated weights", ("sft", "--set", f"base_model={MODEL}"),
        "model/model.safetensors is damaged or truncated", truncated_weights),
    Row("garbage config", ("grpo", "--set", f"init_model={MODEL}"),
        "model/config.json is not valid JSON", garbage_config),
    Row("config of no model", ("sft", "--set", f"base_model={MODEL}"),
        "model/config.json has no model_type", config_of_no_model),
    Row("no tokenizer", ("sft", "--set", f"base_model={MODEL}"),
        "has no tokenizer (none of tokenizer.json", no_tokenizer),
    Row("garbage tokenizer", ("grpo", "--set", f"init_model={MODEL}"),
        "model/tokenizer.json is not a readable tokenizer", garbage_tokenizer),
    Row("no weights", ("sft", "--set", f"base_model={MODEL}"),
        "holds no weights (no *.safetensors", no_weights),
    Row("damaged SFT epoch", ("grpo", "--set", "init_model=sft"),
        "sft/epoch_000001/tokenizer.json", damaged_sft_epoch),  # its checksum, or its JSON
    Row("damaged policy", ("eval", "--set", "checkpoints=policy:0"),
        "policies/step_000000/config.json is not valid JSON", damaged_policy),
    Row("missing eval folder", ("eval", "--set", "checkpoints={bad}/nothing"),
        "nothing is not a folder; pass the folder of a Hugging Face model"),
    # free space before long work
    Row("disk too small", ("sft", "--set", f"base_model={MODEL}"),
        "GB free, but an SFT epoch and its Trainer checkpoint needs about", huge_model),
    # empty RL inputs after the split
    Row("one RL question", ("prep", "--force", "--set", "rl_source={bad}/rl.jsonl"),
        "1 RL question(s) after max_rl_rows/rl_source_limits leave the train split empty",
        one_question),
    Row("RL CSV of a header", ("prep", "--force", "--set", "rl_source={bad}/simple_qa.csv"),
        "simple_qa.csv holds no RL questions (no data row under the header)", csv_header_only),
    Row("RL CSV empty question", ("prep", "--force", "--set", "rl_source={bad}/simple_qa.csv"),
        "simple_qa.csv: data row 2 has an empty problem", csv_empty_question),
    # classes handled before, kept honest here
    Row("RL file not UTF-8", ("prep", "--force", "--set", "rl_source={bad}/rl.jsonl"),
        "rl.jsonl:1: not UTF-8 text (byte b'\\xe9'", latin1),
    Row("SFT file of blank lines", ("prep", "--force", "--set", "sft_source={bad}/sft.jsonl"),
        "sft.jsonl holds no conversations", blank_sft),
    Row("group of one", ("grpo", "--set", "n=1"), "n: Input should be greater than or equal to 2"),
    Row("beta not a number", ("rollout", "--set", "reward_kwargs.beta=high"),
        "reward_kwargs.beta of reward 'proactive' must be a number, got 'high'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A data volume with published data/processed, as every stage after prep expects."""
    workdir = tmp_path_factory.mktemp("bad_inputs")
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    proactive("prep", "--set", "max_rl_rows=24", "--set", "num_sft_samples=8", cwd=workdir)
    return workdir


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, a worker's status file aside."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.parent.name != "status"
    }


def assert_refused(proc: subprocess.CompletedProcess, fragment: str) -> None:
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2, said
    assert fragment in said, said
    assert "Traceback" not in said, said


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_one_message_and_nothing_written(row, prepared, tiny_model, tmp_path):
    run = RunPaths(prepared / "checkpoints" / row.id.replace(" ", "_"))
    row.setup(tmp_path, tiny_model, run)
    before = snapshot(prepared)
    stage, *args = [a.replace("{bad}", str(tmp_path)) for a in row.args]
    run_dir = [] if stage == "prep" else ["--run-dir", str(run.root)]
    try:
        proc = proactive(stage, *run_dir, *args, cwd=prepared, check=False)
    finally:
        shutil.rmtree(tmp_path)  # pytest keeps the last runs' folders: no sparse giant left
    assert_refused(proc, row.fragment)
    assert snapshot(prepared) == before
    assert "BASE_MODEL_PATH" not in proc.stderr or row.args[0] != "eval"


# --- read-only folders: start-up names the folder and the user ----------------------------------


def as_another_user() -> dict:
    """Run the CLI as a user the folder does not let write: as root (whom permissions do not
    stop), the nobody user; else this user, against mode 0555."""
    return {"user": 65534, "group": 65534} if os.getuid() == 0 else {}


@pytest.fixture()
def open_workdir(tiny_model):
    """A data volume every user can read (tmp_path's parents are private to root)."""
    workdir = Path(tempfile.mkdtemp(prefix="bad-inputs-ro-"))
    shutil.copytree(REPO / "data" / "sample", workdir / "data" / "sample")
    shutil.copytree(tiny_model, workdir / "model")
    proactive("prep", "--set", "max_rl_rows=24", "--set", "num_sft_samples=8", cwd=workdir)
    (workdir / "home").mkdir()
    for path in [workdir, *workdir.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)
    yield workdir
    for path in workdir.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(workdir)


@pytest.mark.parametrize(
    ("args", "read_only"),
    [
        (("sft", "--run-dir", "checkpoints/run", "--set", "base_model=model"), "checkpoints"),
        (("grpo", "--run-dir", "checkpoints/run", "--set", "init_model=model"), "checkpoints"),
        (("prep", "--force"), "data"),
    ],
    ids=["sft, read-only checkpoints/", "grpo, read-only checkpoints/", "prep, read-only data/"],
)
def test_a_read_only_folder_is_named_at_start_up(open_workdir, args, read_only):
    (open_workdir / read_only).mkdir(exist_ok=True)
    (open_workdir / read_only).chmod(0o555)
    before = snapshot(open_workdir)
    user = as_another_user()
    proc = subprocess.run(
        command(args),
        cwd=open_workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(open_workdir / "home")},
        **user,
    )
    uid = user.get("user", os.getuid())
    assert_refused(proc, f"is not writable by uid {uid}")
    assert f"{read_only}" in proc.stderr and "Make it writable" in proc.stderr
    assert snapshot(open_workdir) == before

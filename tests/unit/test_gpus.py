"""The GPU check (engine/gpus.py): a container given GPUs (PROACTIVE_GPUS, or the CUDA image's
PROACTIVE_FLAVOR=cuda) that torch cannot see refuses at start in one line, through the real CLI."""

from __future__ import annotations

import pytest

from proactive_rl.engine.gpus import check_gpus, count_gpus, expected_gpus
from proactive_rl.shared.errors import UserError
from tests.conftest import proactive


@pytest.mark.parametrize(
    ("raw", "count"),
    [("2", 2), (" 8 ", 8), ("0", 0), ("0,1", 2), ("3", 3), ("1,3,5", 3), ("GPU-4b1c,GPU-7a", 2)],
)
def test_a_count_or_a_device_list(raw, count):
    assert count_gpus(raw) == count


@pytest.mark.parametrize("raw", ["two", "-1", "1,,2", "0, x", "1.5"])
def test_anything_else_is_refused_naming_the_variable(raw):
    with pytest.raises(UserError, match="PROACTIVE_GPUS"):
        count_gpus(raw)


@pytest.mark.parametrize(
    ("environ", "count"),
    [
        ({}, None),
        ({"PROACTIVE_FLAVOR": "cpu"}, None),
        ({"PROACTIVE_FLAVOR": "cuda"}, 1),
        ({"PROACTIVE_FLAVOR": "cuda", "PROACTIVE_GPUS": "0"}, None),  # 0 turns it off
        ({"PROACTIVE_FLAVOR": "cuda", "PROACTIVE_GPUS": "4"}, 4),
        ({"PROACTIVE_GPUS": "0,1"}, 2),
        ({"PROACTIVE_GPUS": ""}, None),
    ],
)
def test_what_a_container_must_see(environ, count):
    expected = expected_gpus(environ)
    assert (expected.count if expected else None) == count


def never() -> int:
    raise AssertionError("torch was asked although there was nothing to check")


def test_nothing_to_check_asks_torch_nothing():
    check_gpus({}, visible=never)
    check_gpus({"PROACTIVE_FLAVOR": "cuda", "PROACTIVE_GPUS": "0"}, visible=never)


@pytest.mark.parametrize(
    ("environ", "seen", "expected"),
    [
        ({"PROACTIVE_GPUS": "2"}, 0, "expected 2 GPUs (PROACTIVE_GPUS=2) but torch sees 0"),
        (
            {"PROACTIVE_GPUS": "0,1,2,3"},
            2,
            "expected 4 GPUs (PROACTIVE_GPUS=0,1,2,3) but torch sees 2",
        ),
        ({"PROACTIVE_FLAVOR": "cuda"}, 0, "expected 1 GPU (PROACTIVE_FLAVOR=cuda"),
    ],
)
def test_fewer_than_given_is_one_line_naming_what_to_check(environ, seen, expected):
    with pytest.raises(UserError) as err:
        check_gpus(environ, visible=lambda: seen)
    message = str(err.value)
    assert message.startswith(expected) and "\n" not in message
    for hint in ("NVIDIA runtime", "runtimeClassName", "nvidia.com/gpu"):
        assert hint in message


def test_as_many_or_more_pass():
    check_gpus({"PROACTIVE_GPUS": "2"}, visible=lambda: 2)
    check_gpus({"PROACTIVE_FLAVOR": "cuda"}, visible=lambda: 8)


def no_cuda_here() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PROACTIVE_FLAVOR": "cuda"}, "error: expected 1 GPU (PROACTIVE_FLAVOR=cuda"),
        ({"PROACTIVE_FLAVOR": "cuda", "PROACTIVE_GPUS": "2"}, "error: expected 2 GPUs"),
    ],
)
def test_the_cli_refuses_in_one_line_without_a_traceback(tmp_path, env, expected):
    no_cuda_here()
    proc = proactive(
        "sft", "--run-dir", "run", "--data-dir", "data", cwd=tmp_path, check=False, env=env
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(expected) and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()  # before anything else: nothing was written


def test_gpus_zero_runs_the_cuda_image_on_the_cpu(tmp_path):
    proc = proactive(
        "sft",
        "--run-dir",
        "run",
        "--data-dir",
        "data",
        cwd=tmp_path,
        check=False,
        env={"PROACTIVE_FLAVOR": "cuda", "PROACTIVE_GPUS": "0"},
    )
    # past the GPU check: the stage's next check (no prep output here) is what stops it
    assert proc.returncode == 2 and "GPU" not in proc.stderr
    assert "proactive prep" in proc.stderr

"""compose.yaml, the Dockerfiles and the knob files agree with each other and the stage configs.

The plain tests read the files (no Docker needed) and run in `make test`; the `docker` test asks
the installed compose (v2 `docker compose` or v1 `docker-compose`) to validate and resolve the file.
    pytest tests/e2e/test_compose.py            # all, if Docker is installed
    pytest -m "not docker" tests/e2e            # file checks only
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from proactive_rl.shared.config import load_config

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["prep", "sft", "rollout", "grpo", "eval"]
SERVICES = ["preflight", *STAGES, "rollout-1", "pipeline"]
# service -> the services it must wait for (all with service_completed_successfully)
CHAIN = {
    "preflight": set(),  # every stage's settings, checked before any work
    "prep": {"preflight"},
    "sft": {"prep"},
    "rollout": {"sft"},
    "rollout-1": {"sft"},  # the second rollout worker; exits at once with ROLLOUT_WORKERS=1
    "grpo": {"sft"},
    "eval": {"rollout", "rollout-1", "grpo"},
    "pipeline": {"eval"},
}
# The users' knobs and the stage whose command must carry each one.
KNOBS = {
    "NUM_SFT_SAMPLES": "prep",
    "SFT_EPOCHS": "sft",
    "BASE_MODEL_PATH": "sft",
    "RL_ROLLOUTS": "grpo",
    "RL_EPOCHS": "grpo",
    "RL_BETA": "rollout",
    "ROLLOUT_WORKERS": "grpo",
}
VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose's .env / scripts/smoke.sh read them (no quotes, no expansion)."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR} / ${VAR:-default} / $$ rules, enough for this file."""
    text = VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)
    return text.replace("$$", "$")


def stage_config_class(stage: str) -> type:
    module = importlib.import_module(f"proactive_rl.stages.{stage}.config")
    for name, obj in vars(module).items():
        if name.lower() == f"{stage}config":
            return obj
    raise AssertionError(f"proactive_rl.stages.{stage}.config defines no {stage.title()}Config")


def overrides_of(command: str) -> list[str]:
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--set"]


# --- file checks (no Docker) -----------------------------------------------------------------


def test_services_and_chain():
    compose = load_compose()
    assert "version" not in compose, "no `version:` key: compose v2 warns, the spec dropped it"
    services = compose["services"]
    assert set(services) == set(SERVICES)
    for name, needs in CHAIN.items():
        depends = services[name].get("depends_on", {})
        assert set(depends) == needs, name
        for dep in needs:
            assert depends[dep] == {"condition": "service_completed_successfully"}, (name, dep)


def test_shared_settings_volumes_user_and_images():
    compose = load_compose()
    assert "x-stage" in compose, "shared settings live in an x- anchor"
    for name, service in compose["services"].items():
        assert service["working_dir"] == "/workspace", name
        assert "./data:/workspace/data" in service["volumes"], name
        assert "./checkpoints:/workspace/checkpoints" in service["volumes"], name
        assert service["user"] == "${PROACTIVE_UID:-1000}:${PROACTIVE_GID:-1000}", name
        expected = {"pipeline": "base", "preflight": "base", "rollout-1": "rollout"}.get(name, name)
        assert service["image"] == f"proactive-rl/{expected}:${{FLAVOR:-cpu}}", name
        # GPU reservations would make the CPU path need the NVIDIA runtime.
        assert "deploy" not in service, name


def test_knobs_reach_their_stage():
    services = load_compose()["services"]
    for knob, stage in KNOBS.items():
        assert f"${{{knob}:-" in services[stage]["command"], (knob, stage)
    env = {"NUM_SFT_SAMPLES": "25", "SFT_EPOCHS": "3", "RL_ROLLOUTS": "8", "RL_BETA": "0.7"}
    assert "num_sft_samples=25" in overrides_of(interpolate(services["prep"]["command"], env))
    assert "epochs=3" in overrides_of(interpolate(services["sft"]["command"], env))
    assert "n=8" in overrides_of(interpolate(services["grpo"]["command"], env))
    assert "rollout_workers=1" in overrides_of(interpolate(services["grpo"]["command"], env))
    rollout = overrides_of(interpolate(services["rollout"]["command"], env))
    assert "reward_kwargs.beta=0.7" in rollout


@pytest.mark.parametrize("settings", ["defaults", "smoke"])
def test_stage_commands_are_valid_for_the_stage_configs(settings):
    """Every `--set` compose passes (defaults, and scripts/smoke.env) is a valid config field."""
    env = {} if settings == "defaults" else read_env_file(ROOT / "scripts" / "smoke.env")
    services = load_compose()["services"]
    for stage in STAGES:
        words = shlex.split(interpolate(services[stage]["command"], env))
        assert words[:2] == ["--data-dir", "data"], stage
        if stage != "prep":
            run_name = env.get("RUN_NAME", "default")
            assert words[2:4] == ["--run-dir", f"checkpoints/{run_name}"], stage
        load_config(stage_config_class(stage), None, overrides_of(" ".join(words)))


@pytest.mark.parametrize(("workers", "rc"), [(None, 0), ("1", 0), ("2", 0), ("3", 2)])
def test_the_second_rollout_worker_runs_only_with_two_workers(workers, rc):
    """rollout-1 is always in the chain (compose v1 cannot depend on an optional service): with
    ROLLOUT_WORKERS=1 it exits 0 at once; with 2 it is the rollout command plus worker=1."""
    services = load_compose()["services"]
    env = {"RUN_NAME": "r1", "RUN_MODE": "--resume", "ROLLOUT_ARGS": "--set num_examine=1"}
    env |= {"ROLLOUT_WORKERS": workers} if workers else {}
    script = interpolate(services["rollout-1"]["command"][0], env)
    # the image's `proactive` replaced by echo: what the worker would be started with
    proc = subprocess.run(
        ["bash", "-c", script.replace("exec proactive", "exec echo proactive")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == rc, proc.stderr
    if workers != "2":
        assert "proactive rollout" not in proc.stdout
        return
    words = shlex.split(proc.stdout)
    main = shlex.split(interpolate(services["rollout"]["command"], env))
    assert words[:2] == ["proactive", "rollout"] and set(main) <= set(words)
    config = load_config(stage_config_class("rollout"), None, overrides_of(proc.stdout))
    assert config.worker == 1 and config.num_examine == 1


def test_run_mode_hook_and_unset_hooks_vanish():
    services = load_compose()["services"]
    for stage in ["sft", "rollout", "grpo", "eval"]:
        assert "${RUN_MODE:-}" in services[stage]["command"], stage
        assert f"${{{stage.upper()}_ARGS:-}}" in services[stage]["command"], stage
        words = shlex.split(interpolate(services[stage]["command"], {"RUN_MODE": "--clean"}))
        assert "--clean" in words and "" not in words, stage
    assert "${PREP_ARGS:-}" in services["prep"]["command"]


def test_every_variable_is_documented_in_env_example():
    used = set(VAR.findall((ROOT / "compose.yaml").read_text()))
    documented = set(read_env_file(ROOT / ".env.example"))
    assert {name for name, _ in used} <= documented
    assert set(KNOBS) <= documented


def test_pipeline_fails_without_a_report():
    pipeline = load_compose()["services"]["pipeline"]
    assert pipeline["entrypoint"] == ["bash", "-c"]
    script = interpolate(pipeline["command"][0], {"RUN_NAME": "r1"})
    assert "checkpoints/r1" in script and "report.md" in script and "exit 1" in script


def test_dockerfiles():
    base = (ROOT / "images" / "base" / "Dockerfile").read_text()
    for stage in ["base", *STAGES]:
        text = (ROOT / "images" / stage / "Dockerfile").read_text()
        # a parser directive (first line) would pull the Dockerfile frontend from a registry
        assert not re.match(r"#\s*syntax\s*=", text), stage
        assert not re.search(r"(?im)^\s*(COPY|ADD)\b.*(cert|secret|\.pem|netrc)", text), stage
    assert re.search(r"(?m)^USER 1000:1000$", base), "the base image runs as a non-root user"
    assert "--mount=type=bind,source=wheelhouse" in base
    assert "HF_HUB_OFFLINE=1" in base and "TRANSFORMERS_OFFLINE=1" in base
    for stage in STAGES:
        text = (ROOT / "images" / stage / "Dockerfile").read_text()
        assert re.search(r"(?m)^FROM \$\{BASE_IMAGE\}$", text), stage
        assert f'ENTRYPOINT ["proactive", "{stage}"]' in text, stage


def test_lock_pins_every_runtime_requirement():
    pins = {}
    for line in (ROOT / "requirements" / "cpu.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not pinned: {line}"
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    assert pins["torch"].startswith("2.13.0")
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"(?s)^dependencies = \[(.*?)\]", pyproject, re.M).group(1)
    for dep in re.findall(r'"([A-Za-z0-9_.-]+)', deps):
        assert re.sub(r"[-_.]+", "-", dep.lower()) in pins, f"{dep} missing from the lock"


# --- the installed compose validates and resolves the file (needs Docker) --------------------


def compose_command() -> list[str] | None:
    """$COMPOSE if set (as scripts/smoke.sh), else `docker compose` (v2), else docker-compose."""
    if os.environ.get("COMPOSE"):
        return shlex.split(os.environ["COMPOSE"])
    env = {**os.environ, "PATH": f"/usr/bin:{os.environ.get('PATH', '')}"}
    docker = shutil.which("docker", path=env["PATH"])
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose", path=env["PATH"])
    return [v1] if v1 else None


@pytest.mark.docker
def test_compose_config_resolves():
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    knobs = read_env_file(ROOT / ".env.example")  # drop the caller's knobs: a known input
    env = {key: value for key, value in os.environ.items() if key not in knobs}
    env.update(PROACTIVE_UID="1234", PROACTIVE_GID="2345", FLAVOR="cpu", RL_ROLLOUTS="8")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "compose.yaml"), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    services = resolved["services"]
    assert set(services) == set(SERVICES)
    for name, service in services.items():
        assert service["user"] == "1234:2345", name
        assert service["image"].endswith(":cpu"), name
        targets = []
        for volume in service["volumes"]:
            # v1 prints "src:target:rw", v2 prints {type, source, target}
            targets.append(volume["target"] if isinstance(volume, dict) else volume.split(":")[1])
        assert {"/workspace/data", "/workspace/checkpoints"} <= set(targets), name
        assert set(service.get("depends_on", {})) == CHAIN[name], name
    grpo = services["grpo"]["command"]
    grpo = grpo if isinstance(grpo, str) else " ".join(grpo)
    assert "n=8" in grpo


# --- compose.gpu.yaml: the GPU requests merged over compose.yaml ------------------------------


def test_gpu_override_requests_the_configured_gpus():
    gpu = yaml.safe_load((ROOT / "compose.gpu.yaml").read_text())
    services = load_compose()["services"]
    assert set(gpu["services"]) == {"sft", "grpo", "rollout", "eval"} <= set(services)
    sides = {"sft": "TRAIN_GPUS", "grpo": "TRAIN_GPUS", "rollout": "ROLLOUT_GPUS"}
    sides["eval"] = "ROLLOUT_GPUS"
    for name, variable in sides.items():
        (device,) = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        ids = interpolate(device["device_ids"][0], {variable: "5,6"})
        assert ids == "5,6", name

    # training and generation default to disjoint GPUs (2 + 2 on a 4-GPU host)
    def default_ids(name: str) -> str:
        (device,) = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        return interpolate(device["device_ids"][0], {})

    train, roll = default_ids("sft"), default_ids("rollout")
    assert not set(train.split(",")) & set(roll.split(","))
    # the CPU file itself asks for no GPU, so it runs where there is no NVIDIA runtime
    assert "deploy" not in (ROOT / "compose.yaml").read_text()


def test_gpu_env_example_selects_the_override_and_a_valid_recipe():
    env = read_env_file(ROOT / ".env.gpu.example")
    assert env["COMPOSE_FILE"] == "compose.yaml:compose.gpu.yaml"
    assert env["FLAVOR"] == "cuda"
    used = {name for name, _ in VAR.findall((ROOT / "compose.gpu.yaml").read_text())}
    assert used <= set(env)
    for stage in STAGES:  # the recipe validates for every stage with the knobs compose adds
        cls = stage_config_class(stage)
        command = interpolate(load_compose()["services"][stage]["command"], env)
        load_config(cls, None, overrides_of(command), env["RECIPE"], stage)


@pytest.mark.docker
def test_compose_gpu_config_resolves():
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    knobs = read_env_file(ROOT / ".env.example")
    env = {key: value for key, value in os.environ.items() if key not in knobs}
    env.update(FLAVOR="cuda", TRAIN_GPUS="0", ROLLOUT_GPUS="1,2,3", RECIPE="qwen3-8b")
    result = subprocess.run(
        [*command, "-f", "compose.yaml", "-f", "compose.gpu.yaml", "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name, ids in {"sft": "0", "grpo": "0", "rollout": "1,2,3", "eval": "1,2,3"}.items():
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["device_ids"] == [ids], name
        assert services[name]["image"].endswith(":cuda"), name
        assert services[name]["environment"]["PROACTIVE_RECIPE"] == "qwen3-8b", name
    assert "deploy" not in services["prep"]


def test_verl_args_reach_rollout_grpo_and_eval_and_the_stage_args_win():
    """VERL_ARGS goes to the three RL stages; each takes the keys that set its own fields."""
    services = load_compose()["services"]
    env = {
        "RL_ROLLOUTS": "16",
        "VERL_ARGS": "--set actor_rollout_ref.rollout.n=8 "
        "--set custom_reward_function.reward_kwargs.beta=0.7 "
        "--set actor_rollout_ref.rollout.val_kwargs.n=2",
        "EVAL_ARGS": "--set n=3",
    }

    def config(stage: str):
        words = interpolate(services[stage]["command"], env)
        return load_config(stage_config_class(stage), None, overrides_of(words), stage=stage)

    assert config("grpo").n == 8  # over RL_ROLLOUTS, which comes first
    assert config("rollout").reward_kwargs["beta"] == 0.7  # over RL_BETA's default
    assert config("eval").n == 3  # EVAL_ARGS after VERL_ARGS
    assert config("eval").reward_kwargs["beta"] == 0.7
    for stage in ("prep", "sft"):
        assert "${VERL_ARGS" not in services[stage]["command"], stage

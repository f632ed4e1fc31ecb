"""No drift between compose.yaml, the stage table (deploy/stage_table.py) and deploy/k8s: each
stage's order, image, dependencies, arguments and knob defaults, and the preflight's arguments.
Fast: no docker, no cluster (the rendered-manifest tests need kubectl with kustomize v5 and skip
without it). tests/deploy/test_k8s_shape.py: the counts, sizes, policies and images."""

from __future__ import annotations

import re
import shlex

import k8s_gen
import pytest
import yaml
from stage_table import (
    COMPOSE_ONLY,
    ENV_FROM_KNOBS,
    K8S_KNOBS,
    KNOBS,
    PREFLIGHT,
    SEGMENT,
    STAGES,
    TRACKER_ENV,
    TRACKER_SECRET,
    UID,
    by_name,
    compose_form,
    k8s_form,
    preflight_segments,
)

from .conftest import ROOT, documents

NAMES = [stage.name for stage in STAGES]
# pipeline prints the eval reports at the end of `docker compose up`; preflight runs first.
EXTRA_SERVICES = {"pipeline", PREFLIGHT}
IMAGE_TAGS = {"cpu": "cpu", "gpu": "cuda"}


def workers(services: dict, name: str) -> list[str]:
    """A stage's compose services: itself plus its extra workers (rollout-2, rollout-3, ...)."""
    return [name, *(s for s in services if re.fullmatch(rf"{name}-\d+", s))]


def compose_args(spec: dict, name: str) -> list[str]:
    """A service's arguments to `proactive NAME`: its command, or, where the service wraps the
    stage in `bash -c` (rollout-1 exits at once when ROLLOUT_WORKERS=1), the script's
    `exec proactive NAME ...` line."""
    if spec.get("entrypoint") is None:
        command = spec["command"]
        return shlex.split(command) if isinstance(command, str) else list(command)
    assert spec["entrypoint"] == ["bash", "-c"], spec["entrypoint"]
    script = spec["command"][0].replace("\\\n", " ")
    (line,) = re.findall(rf"^\s*exec proactive {name} (.*)$", script, re.MULTILINE)
    return shlex.split(line)


def drop_pair(tokens: list[str], key: str) -> tuple[list[str], str | None]:
    """Remove `--set KEY=VALUE` from tokens; return the rest and VALUE (None if absent)."""
    for i in range(len(tokens) - 1):
        if tokens[i] == "--set" and tokens[i + 1].startswith(f"{key}="):
            return tokens[:i] + tokens[i + 2 :], tokens[i + 1].split("=", 1)[1]
    return tokens, None


def test_generated_base_is_current():
    stale = [str(p) for p, text in k8s_gen.outputs().items() if p.read_text() != text]
    assert not stale, f"run `make k8s-render`: stale {stale}"


def test_compose_has_the_table_stages_in_order(compose):
    services = compose["services"]
    assert [s for s in services if s in NAMES] == NAMES
    known = set(EXTRA_SERVICES).union(*(workers(services, n) for n in NAMES))
    assert set(services) == known, "a compose service the stage table does not know"


@pytest.mark.parametrize("name", NAMES)
def test_compose_service_matches_table(compose, name):
    stage, services = by_name(name), compose["services"]
    indexes = []
    for service in workers(services, name):
        spec = services[service]
        assert spec["image"] == f"{stage.image}:${{FLAVOR:-cpu}}"
        needs = set(spec.get("depends_on", {}))
        # A stage that needs rollout may also wait for rollout's extra workers; the first
        # stage waits for the preflight (the others wait for it through the first).
        want_needs = set(stage.needs) or {PREFLIGHT}
        assert needs - {w for n in want_needs for w in workers(services, n)} == set()
        assert want_needs <= needs
        assert all(
            c["condition"] == "service_completed_successfully"
            for c in spec.get("depends_on", {}).values()
        )
        tokens = compose_args(spec, name)
        if stage.index_field:
            tokens, index = drop_pair(tokens, stage.index_field)
            indexes.append(int(index or 0))  # absent: the field's default, worker 0
        for pair in stage.worker_args[1::2]:
            field, value = compose_form(pair).split("=", 1)
            tokens, given = drop_pair(tokens, field)
            assert given in (None, value), (service, field)
        want = [compose_form(a) for a in stage.args] + [
            compose_form(f"${{{k}}}") for k in stage.extra
        ]
        assert tokens == want, f"compose service {service} drifted from deploy/stage_table.py"
    assert sorted(indexes) == list(range(len(indexes))), f"{name} worker indexes {indexes}"


def test_compose_preflight_gets_every_stage_s_arguments(compose):
    """`proactive preflight` with, per stage, exactly what that stage's service gets."""
    spec = compose["services"][PREFLIGHT]
    assert spec["image"] == "proactive-rl/base:${FLAVOR:-cpu}"
    assert spec["environment"]["PROACTIVE_GPUS"] == "0"  # no GPU: a CUDA image would refuse
    want = ["proactive", PREFLIGHT]
    for i, segment in enumerate(preflight_segments()):
        want += ([SEGMENT] if i else []) + [compose_form(word) for word in segment]
    assert shlex.split(spec["command"]) == want
    prep = compose["services"][STAGES[0].name]["depends_on"]
    assert prep[PREFLIGHT] == {"condition": "service_completed_successfully"}


def test_compose_gpu_stages_say_which_gpus_they_were_given():
    gpu = yaml.safe_load((ROOT / "compose.gpu.yaml").read_text())["services"]
    for stage in STAGES:
        if stage.gpus:
            spec = gpu[stage.name]
            (device,) = spec["deploy"]["resources"]["reservations"]["devices"]
            assert spec["environment"]["PROACTIVE_GPUS"] == device["device_ids"][0], stage.name


def test_compose_knob_defaults_match_table():
    text = (ROOT / "compose.yaml").read_text()
    for knob, default in re.findall(r"\$\{([A-Z_][A-Z0-9_]*):-([^}]*)\}", text):
        table = KNOBS.get(knob, COMPOSE_ONLY.get(knob))
        assert table is not None, f"compose knob {knob} is not in deploy/stage_table.py"
        assert default == table, f"{knob}: compose {default!r}, table {table!r}"


def test_compose_environment_matches_table(compose):
    for name in NAMES:
        env = compose["services"][name].get("environment", {})
        for var, knob in ENV_FROM_KNOBS.items():
            assert env[var] == compose_form(f"${{{knob}}}")
        assert env["PROACTIVE_LAUNCH_ID"] == "${PROACTIVE_LAUNCH_ID:-}"
        # servers and credentials pass through from the shell (a null value), never a default
        assert all(var in env and env[var] is None for var in TRACKER_ENV), name


def test_rendered_configmap_has_every_knob(rendered):
    # The base's knobs.env is generated from the table; an overlay overrides values, adds none.
    for overlay, path in rendered.items():
        configmap = documents(path)["ConfigMap"]
        assert set(configmap["data"]) == set(KNOBS) | set(K8S_KNOBS), overlay
        # A running JobSet's knobs cannot change: immutable, named by a hash of the contents.
        assert configmap["immutable"] is True, overlay
        assert re.fullmatch(r"proactive-rl-knobs-[a-z0-9]{10}", configmap["metadata"]["name"])


@pytest.mark.parametrize("overlay", sorted(IMAGE_TAGS), ids=lambda o: f"{o}-overlay")
def test_rendered_jobset_matches_table(rendered, overlay):
    docs = documents(rendered[overlay])
    knobs = docs["ConfigMap"]["data"]
    jobs = docs["JobSet"]["spec"]["replicatedJobs"]
    assert [j["name"] for j in jobs] == [PREFLIGHT, *NAMES]
    for job in jobs[1:]:
        stage = by_name(job["name"])
        spec = job["template"]["spec"]
        needs = [PREFLIGHT, *stage.needs]
        assert job["dependsOn"] == [{"name": n, "status": "Complete"} for n in needs]
        want_pods = int(knobs[stage.count]) if stage.count else 1
        assert spec["parallelism"] == spec["completions"] == want_pods
        (container,) = spec["template"]["spec"]["containers"]
        assert container["image"] == f"{stage.image}:{IMAGE_TAGS[overlay]}"
        want = [k8s_form(a) for a in stage.args]
        if stage.index_field:
            want += ["--set", f"{stage.index_field}=$(JOB_COMPLETION_INDEX)"]
        assert container["args"] == want + [
            k8s_form(a) for a in (*stage.worker_args, *stage.k8s_args)
        ]
        script = container["command"][2]
        extras = " ".join(f"${k}" for k in stage.extra)
        assert f'exec proactive {stage.name} "$@" {extras}\n' in script
        # the knobs, and tracker credentials only from an optional Secret, never the ConfigMap
        assert container["envFrom"] == [
            {"configMapRef": {"name": docs["ConfigMap"]["metadata"]["name"]}},
            {"secretRef": {"name": TRACKER_SECRET, "optional": True}},
        ]
        assert not set(TRACKER_ENV) & set(docs["ConfigMap"]["data"])
        # every $(VAR) and $VAR is a knob or in the container's env (or set by Kubernetes):
        # nothing left unexpanded
        refs = re.findall(r"\$\(([A-Z_0-9]+)\)", yaml.safe_dump(container))
        refs += re.findall(r"\$([A-Z_][A-Z_0-9]*)", script)
        env = {e["name"] for e in container["env"]}
        assert set(refs) <= set(knobs) | env | {"JOB_COMPLETION_INDEX"}
        gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        if overlay == "gpu" and stage.gpus:
            assert str(gpus) == knobs[f"{stage.gpus.upper()}_GPUS_PER_POD"]
        else:
            assert gpus is None, f"{stage.name} asks for GPUs in the {overlay} overlay"


@pytest.mark.parametrize("overlay", sorted(IMAGE_TAGS), ids=lambda o: f"{o}-overlay")
def test_rendered_pods_run_as_the_images_user(rendered, overlay):
    docs = documents(rendered[overlay])
    pods = [docs["Pod"]["spec"]]
    pods += [
        j["template"]["spec"]["template"]["spec"] for j in docs["JobSet"]["spec"]["replicatedJobs"]
    ]
    for pod in pods:
        assert pod["securityContext"]["runAsUser"] == UID
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["fsGroup"] == UID
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_table_examples():
    import doctest

    import stage_table

    assert doctest.testmod(stage_table).failed == 0

"""What the rendered JobSet promises a cluster: counts that agree everywhere (pods, torchrun,
vLLM, GPUs) in every overlay, including a user's overlay that only changes knobs; CPU and memory
on every container; disruptions retried, user errors final, other failures restarting the run;
the launch id on every stage; placement and storage from cluster.env; images by digest; and a
preflight that stops a JobSet whose knobs moved away from its frozen shape.
Needs kubectl with kustomize v5 (skipped without it), no cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from k8s_shape import JOBSET_UID_KEY
from stage_table import PREFLIGHT, SHAPE_KNOBS, SIZES, STAGES, by_name

from .conftest import ROOT, documents, kustomize, write_overlay

FLAVORS = {"cpu": "cpu", "gpu": "cuda"}
DIGEST = "sha256:" + "0123456789abcdef" * 4


def jobs(docs: dict) -> dict[str, dict]:
    return {j["name"]: j for j in docs["JobSet"]["spec"]["replicatedJobs"]}


def pod(job: dict) -> dict:
    return job["template"]["spec"]["template"]["spec"]


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion (unknown names stay as written)."""
    return re.sub(r"\$\(([A-Z_0-9]+)\)", lambda m: env.get(m[1], m[0]), value)


def effective_env(container: dict, configmap: dict) -> dict[str, str]:
    """What the process sees: envFrom first, then env in order (env wins), values expanded."""
    env = dict(configmap["data"])
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
        elif "configMapKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == configmap["metadata"]["name"]
            env[entry["name"]] = configmap["data"][ref["key"]]
    return env


def gpus_per_pod(knobs: dict, stage, flavor: str) -> int:
    return (
        int(knobs[f"{stage.gpus.upper()}_GPUS_PER_POD"]) if stage.gpus and flavor == "cuda" else 0
    )


def check_shape(docs: dict, flavor: str) -> None:
    """Every place that depends on a count says what the knobs ConfigMap says."""
    knobs = docs["ConfigMap"]["data"]
    by_job = jobs(docs)
    for stage in STAGES:
        job, gpus = by_job[stage.name], gpus_per_pod(knobs, stage, flavor)
        (container,) = pod(job)["containers"]
        env = effective_env(container, docs["ConfigMap"])
        args = [expand(a, env) for a in container["args"]]
        pods = int(knobs[stage.count]) if stage.count else 1
        spec = job["template"]["spec"]
        assert spec["parallelism"] == spec["completions"] == pods, stage.name
        assert env["PROACTIVE_GPUS"] == str(gpus), stage.name
        assert container["resources"].get("limits", {}).get("nvidia.com/gpu") == (gpus or None)
        shm = next(v for v in pod(job)["volumes"] if v["name"] == "dshm")["emptyDir"]
        assert shm["sizeLimit"] == f"{max(1, 4 * gpus)}Gi", stage.name
        if stage.k8s_args:  # vLLM spans the pod's GPUs
            assert f"vllm.tensor_parallel_size={max(1, gpus)}" in args, stage.name
        if stage.worker_args:
            assert f"rollout_workers={knobs['ROLLOUT_WORKERS']}" in args
        if stage.count and not stage.index_field:  # torchrun: one agent per pod
            script = container["command"][2]
            assert f'--nnodes="${stage.count}"' in script
            assert '--nproc_per_node="$PROCS_PER_POD"' in script
            assert env[stage.count] == str(pods)
            assert env["PROCS_PER_POD"] == str(max(1, gpus))
    preflight = effective_env(pod(by_job[PREFLIGHT])["containers"][0], docs["ConfigMap"])
    for knob in SHAPE_KNOBS:
        assert preflight[knob] == preflight[f"KNOBS_{knob}"] == knobs[knob], knob


@pytest.mark.parametrize("overlay", sorted(FLAVORS), ids=lambda o: f"{o}-overlay")
def test_the_overlays_agree_with_themselves(rendered, overlay):
    check_shape(documents(rendered[overlay]), FLAVORS[overlay])


CHANGES = [
    ("gpu", {"GRPO_NODES": "2"}),
    ("gpu", {"ROLLOUT_WORKERS": "3"}),
    ("gpu", {"TRAIN_GPUS_PER_POD": "4"}),
    ("gpu", {"ROLLOUT_GPUS_PER_POD": "1"}),
    ("gpu", {"GRPO_NODES": "3", "TRAIN_GPUS_PER_POD": "8", "ROLLOUT_WORKERS": "2"}),
    ("cpu", {"GRPO_NODES": "2", "ROLLOUT_WORKERS": "2"}),
]


@pytest.mark.parametrize(("over", "knobs"), CHANGES, ids=[f"{o}:{k}" for o, k in CHANGES])
def test_an_overlay_that_changes_a_count_changes_every_place(tmp_path, over, knobs):
    docs = kustomize(write_overlay(tmp_path, over, knobs))
    assert {k: docs["ConfigMap"]["data"][k] for k in knobs} == knobs
    check_shape(docs, FLAVORS[over])


def run_preflight(docs: dict, tmp_path) -> subprocess.CompletedProcess:
    """The preflight's script under bash, with its env, and a `proactive` that prints its args."""
    container = pod(jobs(docs)[PREFLIGHT])["containers"][0]
    fake = tmp_path / "bin/proactive"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    env = effective_env(container, docs["ConfigMap"])
    env["PATH"] = f"{fake.parent}:{os.environ['PATH']}"
    command = container["command"]
    return subprocess.run(command, env=env, capture_output=True, text=True)


def test_the_preflight_gets_every_stage_s_arguments(rendered, tmp_path):
    docs = documents(rendered["cpu"])  # the demo: free-form extras to split
    run = run_preflight(docs, tmp_path)
    assert run.returncode == 0, run.stderr
    knobs = docs["ConfigMap"]["data"]
    want = [PREFLIGHT]
    for i, stage in enumerate(STAGES):
        job = jobs(docs)[stage.name]
        env = effective_env(pod(job)["containers"][0], docs["ConfigMap"])
        args = [expand(a, env) for a in pod(job)["containers"][0]["args"]]
        if stage.index_field:  # worker 0 stands for every worker
            at = args.index(f"{stage.index_field}=$(JOB_COMPLETION_INDEX)")
            args[at - 1 : at + 1] = []
        extras = [word for knob in stage.extra for word in knobs[knob].split()]
        want += ([":::"] if i else []) + [stage.name, *args, *extras]
    assert json.loads(run.stdout) == want


def test_a_count_changed_without_its_shape_stops_the_preflight(tmp_path):
    docs = kustomize(write_overlay(tmp_path, "gpu", {"GRPO_NODES": "2"}, shape=False))
    assert jobs(docs)["grpo"]["template"]["spec"]["parallelism"] == 1  # gpu's frozen shape
    run = run_preflight(docs, tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert "the knobs say GRPO_NODES=2, but this JobSet was rendered for GRPO_NODES=1" in run.stderr


def test_a_knob_that_is_not_a_count_is_refused_in_one_line(tmp_path):
    overlay = write_overlay(tmp_path, "gpu", {"GRPO_NODES": "two"}, shape=False)
    gen = [sys.executable, str(ROOT / "deploy/k8s_gen.py"), "--overlay", str(overlay)]
    run = subprocess.run(gen, capture_output=True, text=True)
    assert run.returncode == 2 and not (overlay / "shape").exists()
    assert run.stderr == (
        "k8s_gen: error: GRPO_NODES='two': a whole number of at least 1 is expected\n"
    )


@pytest.mark.parametrize("overlay", sorted(FLAVORS), ids=lambda o: f"{o}-overlay")
def test_every_container_asks_for_cpu_and_memory(rendered, overlay):
    docs = documents(rendered[overlay])
    pods = {"workspace": docs["Pod"]["spec"], **{n: pod(j) for n, j in jobs(docs).items()}}
    for name, spec in pods.items():
        (container,) = spec["containers"]
        requests = container["resources"]["requests"]
        assert set(requests) == {"cpu", "memory"}, name
        shm = [v["emptyDir"]["sizeLimit"] for v in spec["volumes"] if v["name"] == "dshm"]
        assert int(requests["memory"].removesuffix("Gi")) > int(shm[0].removesuffix("Gi"))
        limits = container["resources"].get("limits", {})
        if name in ("grpo", "rollout"):  # Guaranteed: evicted last
            assert {k: limits[k] for k in requests} == requests, name
        else:
            assert "memory" not in limits, name
    grpo = pod(jobs(docs)["grpo"])["containers"][0]["resources"]["requests"]
    offload = SIZES[FLAVORS[overlay]]["grpo"].shared_gi  # ZeRO-3's optimizer state in host RAM
    assert int(grpo["memory"].removesuffix("Gi")) > offload


def test_disruptions_are_retried_user_errors_fail_and_other_failures_restart(rendered):
    docs = documents(rendered["gpu"])
    policy = docs["JobSet"]["spec"]["failurePolicy"]
    assert policy["maxRestarts"] >= 1
    assert policy["restartStrategy"] == "BlockingRecreate"
    (rule,) = policy["rules"]
    assert rule["action"] == "FailJobSet" and rule["onJobFailureReasons"] == ["PodFailurePolicy"]
    for name, job in jobs(docs).items():
        spec = job["template"]["spec"]
        assert pod(job)["restartPolicy"] == "Never"  # podFailurePolicy requires it
        assert spec["backoffLimit"] == 0
        ignore, fail = spec["podFailurePolicy"]["rules"]  # in this order: first match wins
        disrupted = {"type": "DisruptionTarget", "status": "True"}
        assert ignore == {"action": "Ignore", "onPodConditions": [disrupted]}
        codes = fail["onExitCodes"]
        assert fail["action"] == "FailJob" and codes["containerName"] == name
        assert codes["operator"] == "In" and codes["values"] == [2]  # 75 restarts the run


@pytest.mark.parametrize("overlay", sorted(FLAVORS), ids=lambda o: f"{o}-overlay")
def test_every_job_knows_its_launch_and_waits_for_the_preflight(rendered, overlay):
    docs = documents(rendered[overlay])
    for name, job in jobs(docs).items():
        env = {e["name"]: e for e in pod(job)["containers"][0]["env"]}
        path = env["PROACTIVE_LAUNCH_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert path == f"metadata.labels['{JOBSET_UID_KEY}']", name
        if name != PREFLIGHT:
            assert {"name": PREFLIGHT, "status": "Complete"} in job["dependsOn"]


def test_gpu_pods_are_placed_with_the_gpu_operator_defaults(rendered):
    for overlay in FLAVORS:
        for name, job in jobs(documents(rendered[overlay])).items():
            spec = pod(job)
            gpu = overlay == "gpu" and name != PREFLIGHT and by_name(name).gpus
            assert spec.get("runtimeClassName") == ("nvidia" if gpu else None), name
            taint = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
            assert spec.get("tolerations") == (taint if gpu else None), name
            affinity = spec.get("affinity", {}).get("nodeAffinity", {})
            terms = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {})
            expressions = [
                e for t in terms.get("nodeSelectorTerms", []) for e in t["matchExpressions"]
            ]
            want = [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]
            assert expressions == (want if gpu else []), name


def test_cluster_settings_reach_the_claim_and_the_trainer(tmp_path):
    cluster = {
        "STORAGE_CLASS": "cephfs",
        "RUNTIME_CLASS": "",
        "NCCL_SOCKET_IFNAME": "eth1",
        "NCCL_IB_HCA": "mlx5",
        "RDMA_RESOURCE": "rdma/hca",
    }
    docs = kustomize(write_overlay(tmp_path, "gpu", {"GRPO_NODES": "2"}, cluster))
    assert docs["PersistentVolumeClaim"]["spec"]["storageClassName"] == "cephfs"
    grpo = pod(jobs(docs)["grpo"])
    assert grpo["runtimeClassName"] == "nvidia"  # a field set below can be changed, not cleared
    env = {e["name"]: e.get("value") for e in grpo["containers"][0]["env"]}
    assert env["NCCL_SOCKET_IFNAME"] == "eth1" and env["NCCL_IB_HCA"] == "mlx5"
    assert grpo["containers"][0]["resources"]["limits"]["rdma/hca"] == 1
    rollout = pod(jobs(docs)["rollout"])["containers"][0]
    assert "NCCL_SOCKET_IFNAME" not in {e["name"] for e in rollout["env"]}


def test_images_by_digest_everywhere(tmp_path):
    """As `make push-images` leaves the images component: newName and digest, no tag."""
    tree = tmp_path / "k8s"
    shutil.copytree(ROOT / "deploy/k8s", tree)
    component = tree / "overlays/gpu/images/kustomization.yaml"
    doc = yaml.safe_load(component.read_text())
    names = [entry["name"] for entry in doc["images"]]
    doc["images"] = [
        {"name": n, "newName": f"reg.example:5000/{n}", "digest": DIGEST} for n in names
    ]
    component.write_text(yaml.safe_dump(doc))
    docs = kustomize(tree / "overlays/gpu")
    images = [docs["Pod"]["spec"]["containers"][0]["image"]]
    images += [pod(j)["containers"][0]["image"] for j in jobs(docs).values()]
    assert len(images) == 1 + 1 + len(STAGES)
    for image in images:
        assert re.fullmatch(rf"reg\.example:5000/proactive-rl/[a-z]+@{DIGEST}", image), image
    assert {image.split("@")[0].rsplit("/", 1)[1] for image in images} == {
        n.split("/")[1] for n in names
    }


@pytest.mark.parametrize("overlay", sorted(FLAVORS), ids=lambda o: f"{o}-overlay")
def test_the_committed_images_are_the_local_tags(rendered, overlay):
    docs = documents(rendered[overlay])
    for job in jobs(docs).values():
        image = pod(job)["containers"][0]["image"]
        assert re.fullmatch(rf"proactive-rl/[a-z]+:{FLAVORS[overlay]}", image), image

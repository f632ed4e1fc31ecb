"""The rendered manifests pass strict offline validation, and a misspelled field fails it: in a
core object (kubernetes-validate --strict) and in the JobSet (check-jsonschema with JobSet's CRD
schema, deploy/k8s/crds/). Skipped without the pinned validators (make k8s-validate installs
them: requirements/k8s.txt) or without kubectl's kustomize v5."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import k8s_validate
import pytest
import yaml

TOOLS = ("kubernetes-validate", "check-jsonschema")
pytestmark = pytest.mark.skipif(
    not all((Path(sys.executable).parent / tool).exists() or shutil.which(tool) for tool in TOOLS),
    reason="no kubernetes-validate/check-jsonschema: `make k8s-validate` installs them",
)


def misspell(rendered: Path, tmp_path: Path, kind: str, edit) -> Path:
    """A copy of a rendered manifest with one field of the `kind` object renamed by `edit`."""
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    edit(next(d for d in docs if d["kind"] == kind))
    broken = tmp_path / f"broken-{kind}.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    return broken


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def test_rendered_manifests_validate(rendered, capfd):
    assert k8s_validate.validate(list(rendered.values())) == 0, capfd.readouterr()


def test_misspelled_core_field_fails(rendered, tmp_path, capfd):
    def edit(pvc):
        rename(pvc["spec"], "accessModes", "accesModes")

    broken = misspell(rendered["gpu"], tmp_path, "PersistentVolumeClaim", edit)
    assert k8s_validate.validate([broken]) == 1
    assert "accesModes" in capfd.readouterr().out


def test_misspelled_jobset_field_fails(rendered, tmp_path, capfd):
    def edit(jobset):
        rename(jobset["spec"]["replicatedJobs"][1], "dependsOn", "dependOn")

    broken = misspell(rendered["gpu"], tmp_path, "JobSet", edit)
    assert k8s_validate.validate([broken]) == 1
    assert "'dependOn' was unexpected" in capfd.readouterr().out


def test_misspelled_pod_field_in_the_jobset_fails(rendered, tmp_path, capfd):
    """A pod template inside the JobSet: the CRD's schema and the Job check both catch it."""

    def edit(jobset):
        grpo = next(j for j in jobset["spec"]["replicatedJobs"] if j["name"] == "grpo")
        pod = grpo["template"]["spec"]["template"]["spec"]
        rename(pod["securityContext"], "runAsNonRoot", "runAsNonroot")

    broken = misspell(rendered["cpu"], tmp_path, "JobSet", edit)
    assert k8s_validate.validate([broken]) == 1
    out = capfd.readouterr().out
    assert "'runAsNonroot' was unexpected" in out  # check-jsonschema, the JobSet
    assert "did not validate for resource job/proactive-rl-grpo" in out  # kubernetes-validate

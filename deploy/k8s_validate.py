"""Validate rendered manifests offline: kubernetes-validate for the core kinds, check-jsonschema
with JobSet's bundled CRD schema for the JobSet. No cluster, no network.

    python deploy/k8s_validate.py build/k8s/cpu.yaml build/k8s/gpu.yaml   # make k8s-validate

Both in strict mode: an unknown (misspelled) field fails. kubernetes-validate knows no custom
resources, so the JobSet goes to check-jsonschema (deploy/k8s/crds/, JobSet v0.12.0's schema,
closed); its Job templates are validated a second time as batch/v1 Jobs by kubernetes-validate,
against Kubernetes' own pod schema. Exit status: 0 when every document passes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "k8s/crds/jobset-v1alpha2.schema.json"
K8S_VERSION = os.environ.get("K8S_VERSION", "1.32.0")  # the oldest we claim; kubectl here is 1.32


def split(manifest: Path, out: Path) -> tuple[list[Path], list[Path]]:
    """Write each document to its own file: (core objects, JobSets)."""
    core, jobsets = [], []
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    for i, doc in enumerate(docs):
        name = f"{manifest.stem}-{i:02d}-{doc.get('kind', 'unknown')}"
        if doc.get("kind") == "JobSet":
            path = out / f"{name}.json"
            path.write_text(json.dumps(doc, indent=1))
            jobsets.append(path)
            for job in doc.get("spec", {}).get("replicatedJobs", []):
                wrapped = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": f"{doc['metadata']['name']}-{job.get('name')}"},
                    **job.get("template", {}),
                }
                path = out / f"{name}-{job.get('name')}-job.yaml"
                path.write_text(yaml.safe_dump(wrapped))
                core.append(path)
        else:
            path = out / f"{name}.yaml"
            path.write_text(yaml.safe_dump(doc))
            core.append(path)
    return core, jobsets


def tool(name: str) -> str:
    """The validators live next to this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def validate(manifests: list[Path]) -> int:
    failed = 0
    with tempfile.TemporaryDirectory(prefix="k8s-validate-") as tmp:
        for manifest in manifests:
            core, jobsets = split(manifest, Path(tmp))
            print(f"k8s-validate: {manifest}: {len(core)} core objects, {len(jobsets)} JobSet")
            kv = [tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION]
            failed |= subprocess.run([*kv, *map(str, core)]).returncode
            for path in jobsets:
                cj = [tool("check-jsonschema"), "--schemafile", str(SCHEMA), str(path)]
                failed |= subprocess.run(cj).returncode
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifests", nargs="+", type=Path)
    return validate(parser.parse_args().manifests)


if __name__ == "__main__":
    sys.exit(main())

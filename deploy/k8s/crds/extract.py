"""Make the strict JSON Schema of a JobSet from JobSet's CRD (provenance: README.md here).

    python deploy/k8s/crds/extract.py jobset.x-k8s.io_jobsets.yaml > jobset-v1alpha2.schema.json

Takes the v1alpha2 version's openAPIV3Schema and, as kubeconform's strict mode does, closes every
object that lists its properties (`additionalProperties: false`, except where the CRD keeps
unknown fields): a misspelled field then fails instead of being dropped by the API server.
Descriptions are left out (they are most of the CRD's size and no validator reads them).
"""

from __future__ import annotations

import json
import sys

import yaml


def strict(node: dict) -> dict:
    node = {k: v for k, v in node.items() if k != "description"}
    if "properties" in node:
        node["properties"] = {name: strict(sub) for name, sub in node["properties"].items()}
        if "additionalProperties" not in node and not node.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            node["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = strict(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            node[key] = [strict(sub) for sub in node[key]]
    return node


def main(path: str) -> None:
    with open(path) as f:
        crd = yaml.safe_load(f)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"]["enum"] = ["jobset.x-k8s.io/v1alpha2"]
    schema["properties"]["kind"]["enum"] = ["JobSet"]
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", **schema}
    json.dump(schema, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])

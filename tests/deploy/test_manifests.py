"""The rendered overlays hold together: ports, probes, paths, secrets, selectors, autoscalers."""

from __future__ import annotations

import base64
import re
import shlex
from pathlib import PurePosixPath
from typing import Any

import pytest

from calhooks.service.core.settings import ENV_PREFIX, Settings
from tests.deploy.kustomize import (
    OVERLAYS,
    ROOT,
    Manifest,
    container,
    find,
    image_entrypoint,
    image_env,
    invocation,
    of_kind,
    pod_spec,
    render,
    secret_refs,
)

CALHOOKS_CONTAINERS = (("calhooks-web", "web"), ("calhooks-worker", "worker"))
FAKE_SECRETS = {
    "calhooks": {
        key: f"test-{key}"
        for key in (
            "redis-url",
            "api-key",
            "org-id",
            "encryption-key",
            "mcp-token",
            "redis-password",
            "webhook-secrets.json",
        )
    }
}


def _port(spec: Manifest, port: int | str) -> int:
    """A probe's or Service's port, resolving a named port against the container's ports."""
    if isinstance(port, int):
        return port
    by_name = {p["name"]: p["containerPort"] for p in spec.get("ports", [])}
    assert port in by_name, f"port name {port!r} not declared by container {spec['name']}"
    return int(by_name[port])


def _env(manifests: list[Manifest], deployment: str, name: str) -> dict[str, str]:
    return invocation(
        manifests, find(manifests, "Deployment", deployment), name,
        secrets=FAKE_SECRETS, pod_name="pod-0",
    ).env  # fmt: skip


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _selector_matches(selector: Manifest, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    if not _matches(selector.get("matchLabels", {}), labels):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def _workloads(manifests: list[Manifest]) -> list[Manifest]:
    return of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_run_the_image_entrypoint_with_their_role(overlay: str) -> None:
    """Web runs `calhooks serve` on 0.0.0.0:8080, workers `calhooks worker`, via the ENTRYPOINT."""
    manifests = render(overlay)
    assert image_entrypoint() == ["calhooks"]
    argv = {}
    for deployment, name in CALHOOKS_CONTAINERS:
        spec = container(find(manifests, "Deployment", deployment), name)
        assert "command" not in spec, "override args only, so the image's ENTRYPOINT runs"
        argv[name] = image_entrypoint() + spec["args"]
    all_interfaces = "0.0.0.0"  # noqa: S104 - the kubelet and the Service reach the pod's IP
    assert argv["web"] == ["calhooks", "serve", "--host", all_interfaces, "--port", "8080"]
    assert argv["worker"] == ["calhooks", "worker"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_services_reach_the_ports_the_processes_listen_on(overlay: str) -> None:
    """Probes hit the port CALHOOKS_PROBE_PORT (web) / CALHOOKS_WORKER_HTTP_PORT opens; the
    web Service routes `serve --port` only, never the probe port."""
    manifests = render(overlay)
    web = container(find(manifests, "Deployment", "calhooks-web"), "web")
    web_port = int(web["args"][web["args"].index("--port") + 1])
    web_probe_port = int(_env(manifests, "calhooks-web", "web")["CALHOOKS_PROBE_PORT"])
    assert web_probe_port != web_port
    worker = container(find(manifests, "Deployment", "calhooks-worker"), "worker")
    worker_port = int(_env(manifests, "calhooks-worker", "worker")["CALHOOKS_WORKER_HTTP_PORT"])
    paths = {"liveness": "/livez", "readiness": "/readyz", "startup": "/livez"}
    for spec, port in ((web, web_probe_port), (worker, worker_port)):
        for kind, path in paths.items():
            probe = spec[f"{kind}Probe"]["httpGet"]
            assert probe["path"] == path
            assert _port(spec, probe["port"]) == port
    for service, spec, port in (
        ("calhooks-web", web, web_port),
        ("calhooks-worker", worker, worker_port),
    ):
        for service_port in find(manifests, "Service", service)["spec"]["ports"]:
            assert _port(spec, service_port["targetPort"]) == port
    annotations = find(manifests, "Deployment", "calhooks-web")["spec"]["template"]["metadata"]
    assert annotations["annotations"]["prometheus.io/port"] == str(web_probe_port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shutdown_gives_work_time_to_finish(overlay: str) -> None:
    """The worker's grace period outlasts its job-completion wait; the web's its preStop sleep."""
    manifests = render(overlay)
    worker = pod_spec(find(manifests, "Deployment", "calhooks-worker"))
    wait = int(_env(manifests, "calhooks-worker", "worker")["CALHOOKS_WORKER_JOB_COMPLETION_WAIT"])
    assert worker["terminationGracePeriodSeconds"] >= wait + 20
    web = pod_spec(find(manifests, "Deployment", "calhooks-web"))
    sleep = container(find(manifests, "Deployment", "calhooks-web"), "web")["lifecycle"]
    assert web["terminationGracePeriodSeconds"] >= sleep["preStop"]["sleep"]["seconds"] + 15


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_calhooks_writes_is_on_a_volume(overlay: str) -> None:
    """With a read-only root filesystem, HOME, TMPDIR, the data dir and the spool are mounts."""
    manifests = render(overlay)
    for deployment, name in CALHOOKS_CONTAINERS:
        workload = find(manifests, "Deployment", deployment)
        assert container(workload, name)["securityContext"]["readOnlyRootFilesystem"] is True
        run = invocation(manifests, workload, name, secrets=FAKE_SECRETS, pod_name="pod-0")
        writable = [PurePosixPath(path) for path in run.scratch]
        for variable in ("HOME", "TMPDIR", "CALHOOKS_DATA_DIR", "CALHOOKS_SPOOL_DIR"):
            if variable not in run.env:
                continue
            path = PurePosixPath(run.env[variable])
            assert any(path == w or w in path.parents for w in writable), (deployment, variable)
    web = invocation(
        manifests, find(manifests, "Deployment", "calhooks-web"), "web",
        secrets=FAKE_SECRETS, pod_name="pod-0",
    )  # fmt: skip
    assert "CALHOOKS_SPOOL_DIR" in web.env, "the intake needs its spool"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_files_named_by_settings_are_mounted(overlay: str) -> None:
    """CALHOOKS_*_FILE paths point at a file that a ConfigMap or Secret volume provides."""
    manifests = render(overlay)
    seen = set()
    for deployment, name in CALHOOKS_CONTAINERS:
        workload = find(manifests, "Deployment", deployment)
        run = invocation(manifests, workload, name, secrets=FAKE_SECRETS, pod_name="pod-0")
        for variable, value in run.env.items():
            if variable.startswith(ENV_PREFIX) and variable.endswith("_FILE"):
                path = PurePosixPath(value)
                assert path.name in run.files.get(str(path.parent), {}), (deployment, variable)
                seen.add(variable)
    assert {"CALHOOKS_RULES_FILE", "CALHOOKS_WEBHOOK_SECRETS_FILE"} <= seen


def _quantity(value: str) -> int:
    """Bytes in a Kubernetes quantity such as ``1Gi`` or ``512Mi``."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_full_spool_refuses_before_the_kubelet_evicts(overlay: str) -> None:
    """The spool stops taking deliveries (503) before its emptyDir or the pod's disk limit."""
    manifests = render(overlay)
    workload = find(manifests, "Deployment", "calhooks-web")
    env = _env(manifests, "calhooks-web", "web")
    spool_max = int(
        env.get("CALHOOKS_SPOOL_MAX_BYTES", Settings.model_fields["spool_max_bytes"].default)
    )
    (mount,) = [
        m for m in container(workload, "web")["volumeMounts"]
        if m["mountPath"] == env["CALHOOKS_SPOOL_DIR"]
    ]  # fmt: skip
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
    size_limit = _quantity(volume["emptyDir"]["sizeLimit"])
    assert spool_max <= size_limit * 0.8, "an evicted pod loses its whole spool"
    limits = container(workload, "web")["resources"]["limits"]
    assert _quantity(limits["ephemeral-storage"]) > size_limit


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_grace_period_covers_prestop_and_draining(overlay: str) -> None:
    """preStop sleep plus CALHOOKS_SHUTDOWN_TIMEOUT fit in the web's grace period."""
    manifests = render(overlay)
    workload = find(manifests, "Deployment", "calhooks-web")
    env = _env(manifests, "calhooks-web", "web")
    drain = float(
        env.get("CALHOOKS_SHUTDOWN_TIMEOUT", Settings.model_fields["shutdown_timeout"].default)
    )
    sleep = container(workload, "web")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod_spec(workload)["terminationGracePeriodSeconds"] >= sleep + drain + 5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_calhooks_variable_is_a_setting(overlay: str) -> None:
    """A misspelt CALHOOKS_* name would be silently ignored by the settings: none may exist."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    manifests = render(overlay)
    for deployment, name in CALHOOKS_CONTAINERS:
        env = _env(manifests, deployment, name)
        unknown = {v for v in env if v.startswith(ENV_PREFIX)} - known
        assert not unknown, f"{deployment}: not settings: {sorted(unknown)}"
    assert not {v for v in image_env() if v.startswith(ENV_PREFIX)} - known


def test_dev_secret_has_every_key_and_only_fake_values() -> None:
    """The dev overlay applies as is: its generated Secret holds each key read, none real."""
    manifests = render("overlays/dev")
    secret = find(manifests, "Secret", "calhooks")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    for name, key in secret_refs(manifests):
        assert name == secret["metadata"]["name"]
        assert key in data, f"dev Secret lacks {key}"
    assert not data["api-key"].startswith("cal_live_")
    assert "dev" in data["redis-password"]
    assert "dev" in data["mcp-token"]
    assert base64.urlsafe_b64decode(data["encryption-key"]) == b"0" * 32


def test_docs_create_every_secret_key_production_reads() -> None:
    """The docs' `kubectl create secret` command provides each key the production pods read."""
    readme = (ROOT / "docs" / "kubernetes.md").read_text()
    commands = re.findall(
        r"kubectl (?:-n \S+ )?create secret generic calhooks(?:[^\n]*\\\n)*[^\n]*", readme
    )
    assert commands, "docs/kubernetes.md shows no `kubectl create secret generic calhooks`"
    words = shlex.split(commands[0].replace("\\\n", " "))
    created = {
        word.split("=", 2)[1]
        for word in words
        if word.startswith(("--from-literal=", "--from-file="))
    }
    needed = {key for _, key in secret_refs(render("overlays/production"))}
    assert needed <= created, f"docs/kubernetes.md's command misses {sorted(needed - created)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_pick_exactly_their_pods(overlay: str) -> None:
    """Each Service and PodDisruptionBudget selects the pods of exactly one workload."""
    manifests = render(overlay)
    pods = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
        for w in _workloads(manifests)
    }
    for workload in _workloads(manifests):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert _selector_matches(workload["spec"]["selector"], labels)
    for service in of_kind(manifests, "Service"):
        chosen = [n for n, labels in pods.items() if _matches(service["spec"]["selector"], labels)]
        assert len(chosen) == 1, (service["metadata"]["name"], chosen)
    for pdb in of_kind(manifests, "PodDisruptionBudget"):
        chosen = [
            n for n, labels in pods.items() if _selector_matches(pdb["spec"]["selector"], labels)
        ]
        assert chosen == [pdb["metadata"]["name"]]


def test_production_autoscalers_own_the_replica_counts() -> None:
    """The HPA scales web, KEDA the workers, and neither Deployment pins a replica count."""
    manifests = render("overlays/production")
    hpa = find(manifests, "HorizontalPodAutoscaler", "calhooks-web")
    scaled = find(manifests, "ScaledObject", "calhooks-worker")
    for target, deployment in ((hpa, "calhooks-web"), (scaled, "calhooks-worker")):
        ref = target["spec"]["scaleTargetRef"]
        assert (ref.get("kind", "Deployment"), ref["name"]) == ("Deployment", deployment)
        assert "replicas" not in find(manifests, "Deployment", deployment)["spec"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert re.search(r"\bcalhooks_queue_ready_jobs\b", trigger["metadata"]["query"])
    assert float(trigger["metadata"]["threshold"]) > 0
    dev = render("overlays/dev")
    assert not of_kind(dev, "HorizontalPodAutoscaler")
    assert not of_kind(dev, "ScaledObject")
    assert find(dev, "Deployment", "calhooks-web")["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_through_what_calhooks_uses(overlay: str) -> None:
    """Default deny, web ingress on its port, worker metrics, Redis from calhooks only, egress."""
    manifests = render(overlay)
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(manifests, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    labels = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
        for w in _workloads(manifests)
    }

    def ingress_ports(pod: str) -> set[int]:
        return {
            port["port"]
            for spec in policies.values()
            if "Ingress" in spec["policyTypes"]
            and _selector_matches(spec["podSelector"], labels[pod])
            for rule in spec.get("ingress", [])
            for port in rule.get("ports", [])
        }

    assert ingress_ports("calhooks-web") == {8080, 9090}
    assert ingress_ports("calhooks-worker") == {9091}
    for spec in policies.values():
        for rule in spec.get("ingress", []):
            if any(port["port"] in (9090, 9091) for port in rule.get("ports", [])):
                assert rule.get("from"), "probe and metrics ports must not be open to any source"
    egress = policies["calhooks-egress"]
    for pod in ("calhooks-web", "calhooks-worker"):
        assert _selector_matches(egress["podSelector"], labels[pod])
    egress_ports = {p["port"] for rule in egress["egress"] for p in rule["ports"]}
    assert {53, 6379, 443} <= egress_ports
    redis = policies["calhooks-redis-ingress"]
    (rule,) = redis["ingress"]
    for pod in ("calhooks-web", "calhooks-worker"):
        assert _selector_matches(rule["from"][0]["podSelector"], labels[pod])
    if "calhooks-redis" in labels:
        assert ingress_ports("calhooks-redis") == {6379}
        assert not _selector_matches(egress["podSelector"], labels["calhooks-redis"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_profile(overlay: str) -> None:
    """Non-root numeric UIDs, no token, no privilege escalation, no capabilities, seccomp on."""
    manifests = render(overlay)
    namespace = of_kind(manifests, "Namespace")[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in _workloads(manifests):
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 10000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            context: dict[str, Any] = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert set(c["resources"]["requests"]) >= {"cpu", "memory"}
            assert set(c["resources"]["limits"]) >= {"cpu", "memory"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_pods_get_the_api_key_only_when_they_apply_webhooks(overlay: str) -> None:
    """The organization's key reaches a web pod only with auto-apply, the one thing there
    that calls Cal.com with it; the workers always get it."""
    manifests = render(overlay)
    web = _env(manifests, "calhooks-web", "web")
    applies = web.get("CALHOOKS_WEBHOOKS_AUTO_APPLY", "").lower() in ("1", "true", "yes")
    assert ("CALHOOKS_API_KEY" in web) == applies, overlay
    assert "CALHOOKS_API_KEY" in _env(manifests, "calhooks-worker", "worker")

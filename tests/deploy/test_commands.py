"""The production overlay's web and worker containers, started on this machine as rendered.

Each container's argv is the image's ENTRYPOINT plus the rendered ``args``; its environment
is the image's ENV plus the rendered ``envFrom``/``env`` with ConfigMaps resolved; its mounted
ConfigMap and Secret files and emptyDirs become temporary directories. Only what cannot exist
here is substituted, and nothing else:

* Secret values (the real Secret is never in the repository) -> test values: the suite's
  Redis, the sandbox Cal.com's seeded API key and organization, a fresh Fernet key;
* mount paths -> their temporary directories, wherever a value names them;
* ``CALHOOKS_API_URL`` (Cal.com) -> the sandbox Cal.com;
* listening ports -> free loopback ports (8080, 9090 and 9091 may be taken on a developer machine).

Where the machine allows a private mount namespace (root, as in CI), each process also gets
the pod's ``readOnlyRootFilesystem``: the whole filesystem is read-only to it except its
emptyDir volumes. Then the probes' paths must answer as the kubelet expects, and SIGTERM must
end each process within the pod's grace period (exit status 0, or death by the SIGTERM that
uvicorn re-raises once its graceful shutdown is done: what Kubernetes reports as 143).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from calhooks.service.calcom.webhooks import sign
from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port
from calhooks.service.core.secretbox import generate_key
from calhooks.service.sandbox import SANDBOX_API_KEY, SANDBOX_ORG_ID
from tests.deploy.kustomize import Invocation, Manifest, find, invocation, pod_spec, render
from tests.sandbox.server import RunningSandbox

OVERLAY = "overlays/production"
MCP_TOKEN = "test-mcp-token-from-the-deploy-test"
WEBHOOK_SECRET = "test-webhook-secret-from-the-deploy-test"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
STARTUP_SECONDS = 60  # the startup probes allow 2 s x 30 failures


def _secrets(redis_url: str) -> dict[str, dict[str, str]]:
    return {
        "calhooks": {
            "redis-url": redis_url,
            "api-key": SANDBOX_API_KEY,
            "org-id": str(SANDBOX_ORG_ID),
            "encryption-key": generate_key(),
            "mcp-token": MCP_TOKEN,
            "webhook-secrets.json": json.dumps({"secrets": [{"secret": WEBHOOK_SECRET}]}),
        }
    }


@dataclass
class Container:
    """One container of the rendered overlay, running as a local process."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    grace_seconds: int
    probe_url: str = ""  # where the probes and /metrics answer (base_url unless apart)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=10)

    def probe(self, path: str) -> httpx.Response:
        return httpx.get((self.probe_url or self.base_url) + path, timeout=10)

    def wait_until_live(self, path: str) -> None:
        """Poll ``path`` as the startup probe would, until 200 or the probe would give up."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.output()}"
            try:
                if self.probe(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{self.name} never live:\n{self.output()}"
            time.sleep(0.2)

    def terminate(self) -> bool:
        """SIGTERM, as the kubelet sends after preStop: whether it ended cleanly in time."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=self.grace_seconds) in (0, -signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"{self.name} outlived its {self.grace_seconds} s grace period:\n{self.output()}"
            ) from None


def _private_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


READ_ONLY_ROOT = _private_mounts()

# Run "$@" with / read-only and the first $1 directories after it still writable: each is
# bind-mounted onto itself first, which makes it a mount of its own that keeps its rw flag.
_READ_ONLY_SCRIPT = """
count=$1; shift
while [ "$count" -gt 0 ]; do mount --bind "$1" "$1" || exit 97; shift; count=$((count - 1)); done
mount -o remount,bind,ro / || exit 98
exec "$@"
"""


def _with_read_only_root(argv: list[str], writable: list[Path]) -> list[str]:
    """``argv`` wrapped to see the filesystem as a readOnlyRootFilesystem pod would."""
    if not READ_ONLY_ROOT:
        return argv
    return [
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", _READ_ONLY_SCRIPT, "read-only-root",
        str(len(writable)), *map(str, writable), *argv,
    ]  # fmt: skip


def _localize(run: Invocation, root: Path) -> tuple[list[str], dict[str, str], list[Path]]:
    """Materialize the mounts under ``root``, point argv and env at them; the writable ones."""
    mounts: dict[str, Path] = {}
    for index, mount in enumerate([*run.files, *run.scratch]):
        mounts[mount] = root / f"mount{index}"
        mounts[mount].mkdir(parents=True)
    for mount, files in run.files.items():
        for name, content in files.items():
            (mounts[mount] / name).write_text(content)
    pattern = re.compile(
        "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True)) + r"(?=/|$)"
    )

    def localize(value: str) -> str:
        return pattern.sub(lambda match: str(mounts[match[0]]), value)

    env = {key: localize(value) for key, value in run.env.items()}
    return [localize(arg) for arg in run.argv], env, [mounts[m] for m in run.scratch]


def _start(
    name: str,
    run: Invocation,
    workload: Manifest,
    tmp_path: Path,
    *,
    sandbox_url: str,
    port: int,
    probe_path: str,
    probe_port: int | None = None,
) -> Container:
    argv, env, writable = _localize(run, tmp_path / name)
    # The image's PATH puts the venv's bin first; here that venv is this interpreter's.
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    env["CALHOOKS_API_URL"] = sandbox_url
    resolved = shutil.which(argv[0], path=env["PATH"])
    assert resolved, f"{argv[0]} not found on {env['PATH']}"
    log = tmp_path / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            _with_read_only_root([resolved, *argv[1:]], writable),
            env=env,
            cwd=env.get("HOME", str(tmp_path)),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    container = Container(
        name=name,
        process=process,
        base_url=f"http://127.0.0.1:{port}",
        log=log,
        grace_seconds=pod_spec(workload)["terminationGracePeriodSeconds"],
        probe_url=f"http://127.0.0.1:{probe_port}" if probe_port else "",
    )
    container.wait_until_live(probe_path)
    return container


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The suite's Redis, flushed first (as the ``redis_client`` fixture does for async tests)."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """Started containers, killed at the end if a test left one running."""
    started: list[Container] = []
    yield started
    for container in started:
        if container.process.poll() is None:
            container.process.kill()
            container.process.wait()


def _probe_paths(workload: Manifest, name: str) -> dict[str, str]:
    (spec,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return {kind: spec[f"{kind}Probe"]["httpGet"]["path"] for kind in ("liveness", "readiness")}


def _wait_ready(container: Container, path: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while (ready := container.probe(path)).status_code != 200:
        assert time.monotonic() < deadline, f"never ready: {ready.text}\n{container.output()}"
        time.sleep(0.2)


def _start_web(
    redis_url: str, sandbox_url: str, tmp_path: Path, containers: list[Container]
) -> Container:
    """The web container of the production overlay, live and ready."""
    manifests = render(OVERLAY)
    workload = find(manifests, "Deployment", "calhooks-web")
    run = invocation(
        manifests, workload, "web", secrets=_secrets(redis_url), pod_name="calhooks-web-0"
    )
    port, probe_port = free_port(), free_port()
    run.argv[run.argv.index("--port") + 1] = str(port)
    run.env["CALHOOKS_PROBE_PORT"] = str(probe_port)
    paths = _probe_paths(workload, "web")
    web = _start(
        "web", run, workload, tmp_path, sandbox_url=sandbox_url, port=port,
        probe_path=paths["liveness"], probe_port=probe_port,
    )  # fmt: skip
    containers.append(web)
    _wait_ready(web, paths["readiness"])
    return web


def _start_worker(
    redis_url: str, sandbox_url: str, tmp_path: Path, containers: list[Container]
) -> Container:
    """The worker container of the production overlay, live and ready."""
    manifests = render(OVERLAY)
    workload = find(manifests, "Deployment", "calhooks-worker")
    run = invocation(
        manifests, workload, "worker", secrets=_secrets(redis_url), pod_name="calhooks-worker-0"
    )
    port = free_port()
    run.env["CALHOOKS_WORKER_HTTP_PORT"] = str(port)
    paths = _probe_paths(workload, "worker")
    worker = _start(
        "worker", run, workload, tmp_path, sandbox_url=sandbox_url, port=port,
        probe_path=paths["liveness"],
    )  # fmt: skip
    containers.append(worker)
    _wait_ready(worker, paths["readiness"])
    return worker


def _deliver(web: Container, trigger: str) -> httpx.Response:
    """Post Cal.com's example ``trigger`` delivery, signed with the mounted secret."""
    body = json.dumps(
        json.loads((FIXTURES / f"{trigger}.json").read_text()), separators=(",", ":")
    ).encode()
    return httpx.post(
        web.base_url + "/webhooks/cal",
        content=body,
        headers={
            "content-type": "application/json",
            "x-cal-signature-256": sign(body, WEBHOOK_SECRET.encode()),
        },
        timeout=10,
    )


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0


def test_web_container_answers_its_probes_and_queues_a_signed_delivery(
    redis_url: str,
    sandbox: RunningSandbox,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    """`calhooks serve` as rendered: live, ready, verifies with the mounted secret, queues."""
    web = _start_web(redis_url, sandbox.url, tmp_path, containers)
    assert web.probe("/livez").status_code == 200
    for path in ("/livez", "/readyz", "/metrics"):  # not on the port the Service routes
        assert web.get(path).status_code == 404
    accepted = _deliver(web, "MEETING_ENDED")
    assert accepted.status_code == 202, accepted.text
    queued = redis.Redis.from_url(redis_url)
    try:
        assert queued.zscore("arq:queue", accepted.json()["id"]) is not None
    finally:
        queued.close()
    metrics = web.probe("/metrics")
    assert metrics.status_code == 200
    assert "calhooks_" in metrics.text
    assert web.terminate(), web.output()


def test_worker_container_answers_its_probes_and_exports_the_keda_gauge(
    redis_url: str,
    sandbox: RunningSandbox,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    """`calhooks worker` as rendered: live, ready, exports KEDA's gauge, clean SIGTERM."""
    worker = _start_worker(redis_url, sandbox.url, tmp_path, containers)
    assert worker.get("/livez").status_code == 200
    metrics = worker.get("/metrics")
    assert metrics.status_code == 200
    scaled = find(render(OVERLAY), "ScaledObject", "calhooks-worker")
    gauge = re.search(r"calhooks_\w+", scaled["spec"]["triggers"][0]["metadata"]["query"])
    assert gauge, "the KEDA query names no calhooks metric"
    assert re.search(rf"^{gauge[0]} ", metrics.text, re.MULTILINE), metrics.text
    assert worker.terminate(), worker.output()


def test_web_and_worker_hand_a_delivery_over_through_redis(
    redis_url: str,
    sandbox: RunningSandbox,
    tmp_path: Path,
    containers: list[Container],
) -> None:
    """A delivery the web container accepts is processed by the worker container."""
    web = _start_web(redis_url, sandbox.url, tmp_path, containers)
    worker = _start_worker(redis_url, sandbox.url, tmp_path, containers)
    before = _metric(
        worker.get("/metrics").text,
        "calhooks_worker_events_total",
        connection="env",
        outcome="processed",
    )
    accepted = _deliver(web, "BOOKING_CREATED")
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 60
    while (
        _metric(
            worker.get("/metrics").text,
            "calhooks_worker_events_total",
            connection="env",
            outcome="processed",
        )
        <= before
    ):
        assert time.monotonic() < deadline, f"never processed:\n{worker.output()}"
        time.sleep(0.2)
    assert web.terminate(), web.output()
    assert worker.terminate(), worker.output()


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/production"])
def test_rules_file_the_workers_mount_passes_rules_check(overlay: str, tmp_path: Path) -> None:
    """The rules ConfigMap, as mounted at CALHOOKS_RULES_FILE, is a valid rules file."""
    manifests = render(overlay)
    workload = find(manifests, "Deployment", "calhooks-worker")
    run = invocation(
        manifests, workload, "worker", secrets=_secrets("redis://unused"), pod_name="w"
    )
    rules_file = Path(run.env["CALHOOKS_RULES_FILE"])
    local = tmp_path / rules_file.name
    local.write_text(run.files[str(rules_file.parent)][rules_file.name])
    calhooks = Path(sys.executable).parent / "calhooks"
    checked = subprocess.run(
        [str(calhooks), "rules", "check", str(local)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr

"""The console in a real browser (Debian's chromium driven by Playwright) against `calhooks dev`.

One scenario, in order: signed out every page goes to sign-in; an operator signs in; a
time-off booking emitted by the sandbox appears in the live events list without a reload;
its timeline shows the rule and the Cal.com call; a sandbox fault makes the next booking's
rule fail for good; it shows in the dead letters; the read-only role cannot replay it; a
POST without the CSRF token is refused; the fault cleared, the operator replays it and it
succeeds; the reconciliation page shows the workers' baseline pass and runs one more when
asked. Every page is screenshotted into ``tmp/artifacts/console/`` (and, with
``CALHOOKS_DOCS_SCREENSHOTS=1``, the overview and a timeline into ``docs/images/``).

Chromium comes from the system (``apt-get install chromium``; ``.ci/run`` installs it): no
browser is downloaded, and a missing chromium fails this test rather than skipping it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.console.conftest import OPERATOR, READER, console_users

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tmp" / "artifacts" / "console"
DOCS_IMAGES = ROOT / "docs" / "images"
OOO_CREATE = "cal_organizations_users_ooocontroller_create_organization_user_ooo"
PAGES = [
    "/console/",
    "/console/events",
    "/console/rules",
    "/console/dead-letters",
    "/console/webhooks",
    "/console/connections",
    "/console/reconciliation",
]
DEADLINE = 60.0


def chromium_path() -> str:
    for candidate in (os.environ.get("CALHOOKS_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Dev:
    console: str
    sandbox: str
    log: Path


def wait_for(condition: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`calhooks dev` in a process of its own: embedded Redis in a temporary data dir."""
    data = tmp_path_factory.mktemp("console-dev")
    ports = {"sandbox": free_port(), "intake": free_port(), "worker": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
    env.update(
        {
            "CALHOOKS_DATA_DIR": str(data),
            "CALHOOKS_CONSOLE_USERS": console_users(),
            "CALHOOKS_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "CALHOOKS_PUBLIC_URL": f"http://127.0.0.1:{ports['intake']}",
            "CALHOOKS_LOG_FORMAT": "json",
        }
    )
    log = data / "dev.log"
    command = [
        sys.executable, "-m", "calhooks.service", "dev",
        "--sandbox-port", str(ports["sandbox"]), "--port", str(ports["intake"]),
        "--worker-port", str(ports["worker"]),
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )

    def started() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"calhooks dev exited:\n{log.read_text()[-3000:]}")
        return "calhooks dev is running" in log.read_text()

    try:
        wait_for(started, "calhooks dev to start")
        yield Dev(
            f"http://127.0.0.1:{ports['intake']}", f"http://127.0.0.1:{ports['sandbox']}", log
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


def shot(page: Page, name: str, *, docs: bool = False) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if docs and os.environ.get("CALHOOKS_DOCS_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMAGES / f"console-{name}.png"), full_page=False)


def sign_in(page: Page, base: str, user: tuple[str, str]) -> None:
    page.goto(base + "/console/sign-in")
    page.get_by_label("Name").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def emit_time_off(sandbox: str) -> str:
    """Have the sandbox deliver a time-off booking; the intake's event id."""
    answer = httpx.post(
        sandbox + "/_sandbox/events",
        json={"trigger": "BOOKING_CREATED", "user": "alice", "eventType": "time-off", "wait": True},
        timeout=30,
    )
    answer.raise_for_status()
    deliveries = answer.json()["deliveries"]
    assert deliveries, answer.text
    response = deliveries[0]["response"]
    event_id = httpx.Response(200, content=response).json()["id"]
    assert isinstance(event_id, str)
    return event_id


def test_console_in_a_browser(dev: Dev, browser: Browser) -> None:
    base = dev.console
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    # Signed out, every page redirects to sign-in.
    for path in [*PAGES, "/console/events/0123456789abcdef", "/console/dead-letters/abcd"]:
        page.goto(base + path)
        assert "/console/sign-in?next=" in page.url, path
    shot(page, "sign-in")

    sign_in(page, base, OPERATOR)
    shot(page, "overview-empty")

    # A time-off booking appears in the live list without reloading the page.
    page.goto(base + "/console/events")
    expect(page.get_by_role("heading", name="Events")).to_be_visible()
    event_id = emit_time_off(dev.sandbox)
    row = page.get_by_role("row").filter(has_text=event_id[:12])
    expect(row).to_contain_text("done", timeout=DEADLINE * 1000)
    assert page.url.endswith("/console/events")  # htmx swapped the rows in; no navigation
    shot(page, "events")

    # Its timeline: the rule, the Cal.com calls, the outcome, the redacted payload.
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
    expect(page.locator(".timeline")).to_contain_text(f"Cal.com {OOO_CREATE}")
    expect(page.get_by_role("row").filter(has_text="time-off-creates-ooo")).to_contain_text("done")
    expect(page.get_by_role("row").filter(has_text="time-off-cancel-deletes-ooo")).to_contain_text(
        "not matched"
    )
    expect(page.get_by_label("Payload")).to_contain_text('"triggerEvent": "BOOKING_CREATED"')
    shot(page, "timeline", docs=True)

    # A sandbox fault makes the next booking's OOO creation fail for good.
    httpx.post(dev.sandbox + "/_sandbox/faults", json={"tool": OOO_CREATE, "status": 400})
    failing_id = emit_time_off(dev.sandbox)

    def dead_lettered() -> bool:
        page.goto(base + "/console/dead-letters")
        return page.get_by_role("row").filter(has_text="time-off-creates-ooo").count() == 1

    wait_for(dead_lettered, "the rule in the dead-letter queue")
    shot(page, "dead-letters")
    entry_link = page.get_by_role("row").filter(has_text="time-off-creates-ooo").get_by_role("link")
    entry_id = entry_link.inner_text()
    entry_link.click()
    expect(page.get_by_role("heading", name=f"Dead letter {entry_id}")).to_be_visible()
    expect(page.locator("body")).to_contain_text("400")
    shot(page, "dead-letter")
    page.goto(base + f"/console/events/{failing_id}")
    expect(page.get_by_role("row").filter(has_text="time-off-creates-ooo")).to_contain_text("dead")
    shot(page, "timeline-dead-lettered")

    # The read-only role sees the entry but cannot replay it, not even by posting the form.
    reader = browser.new_context(viewport={"width": 1280, "height": 900})
    reader_page = reader.new_page()
    sign_in(reader_page, base, READER)
    reader_page.goto(base + "/console/dead-letters")
    expect(reader_page.get_by_text("Your role is read-only")).to_be_visible()
    assert reader_page.get_by_role("button", name="Replay selected").count() == 0
    csrf = reader_page.locator('input[name="csrf"]').first.get_attribute("value") or ""
    refused = reader_page.request.post(
        base + "/console/dead-letters/replay", form={"id": entry_id, "csrf": csrf}
    )
    assert refused.status == 403
    reader.close()

    # A POST without the CSRF token is refused, even for the operator.
    no_token = page.request.post(base + "/console/dead-letters/replay", form={"id": entry_id})
    assert no_token.status == 403
    assert "CSRF" in no_token.text()

    # Clear the fault, replay the entry from the page, and see the rule succeed.
    httpx.delete(dev.sandbox + "/_sandbox/faults")
    page.goto(base + "/console/dead-letters")
    page.get_by_label(f"Select {entry_id}").check()
    page.get_by_role("button", name="Replay selected").click()
    expect(page.get_by_role("status")).to_contain_text("Replaying 1: 1 queued again")

    def replayed() -> bool:
        page.goto(base + "/console/dead-letters")
        return page.get_by_text("The dead-letter queue is empty.").count() == 1

    wait_for(replayed, "the replayed rule to succeed")
    page.goto(base + f"/console/events/{failing_id}")
    expect(page.get_by_role("row").filter(has_text="time-off-creates-ooo")).to_contain_text("done")

    # The other pages, and the dry run of a recent event.
    page.goto(base + "/console/rules")
    page.get_by_label("A recent event").select_option(value=event_id)
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#report")).to_contain_text("time-off-creates-ooo: matched")
    expect(page.locator("#report")).to_contain_text(OOO_CREATE)
    shot(page, "rules-dry-run")
    for name, path in (("webhooks", "/console/webhooks"), ("connections", "/console/connections")):
        page.goto(base + path)
        expect(page.locator("main h1")).to_be_visible()
        shot(page, name)

    # Reconciliation: the workers' first pass (the baseline), then one asked for now.
    def passes() -> int:
        page.goto(base + "/console/reconciliation")
        figure = page.locator("dt", has_text="Passes so far").locator("xpath=../dd")
        return int(figure.inner_text())

    wait_for(lambda: passes() >= 1, "the workers' first reconciliation pass")
    before = passes()
    expect(page.get_by_role("row").filter(has_text="baseline")).to_have_count(1)
    page.get_by_role("button", name="Run a pass now").click()
    expect(page.get_by_role("status")).to_contain_text("A pass is requested")
    wait_for(lambda: passes() > before, "the reconciliation pass asked for")
    shot(page, "reconciliation", docs=True)
    page.goto(base + "/console/dead-letters/drop?all=1")
    shot(page, "drop-confirm")
    page.goto(base + "/console/")
    expect(page.locator("svg.chart").first).to_be_visible()
    expect(page.locator("main")).to_contain_text("Events recorded")
    shot(page, "overview", docs=True)
    context.close()

    # The system's dark preference gives the dark palette.
    dark = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    dark_page = dark.new_page()
    sign_in(dark_page, base, OPERATOR)
    background = dark_page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)", background
    shot(dark_page, "overview-dark")
    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    dark_page.keyboard.press("Tab")
    assert dark_page.evaluate("document.activeElement.textContent") == "Skip to content"
    dark_page.keyboard.press("Enter")
    assert dark_page.evaluate("document.activeElement.id") == "main"
    dark.close()

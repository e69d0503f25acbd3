"""The `calhooks` entry point: commands load lazily, help is plain, errors are one line,
`--json` means output, `-v` shows retries, and no embedded Redis outlives a command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calhooks.service.cli.main import COMMANDS, app
from calhooks.service.cli.ports import port_free
from calhooks.service.core.embedded_redis import free_port

runner = CliRunner()
CALHOOKS = Path(os.path.abspath(sys.executable)).parent / "calhooks"
HEAVY = ("httpx", "uvicorn", "redis", "starlette", "pydantic", "arq", "mcp", "cel")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
    return subprocess.run(
        [sys.executable, "-m", "calhooks.service", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listed_help_is_the_commands_own(name: str) -> None:
    """Each lazily loaded command's line in `calhooks --help` is its own first help line."""
    command = COMMANDS[name].load(name)
    assert command.name == name
    assert (command.help or "").strip().splitlines()[0] == COMMANDS[name].help


def test_help_imports_no_command_module() -> None:
    """`calhooks --help` loads typer only: none of the heavy libraries the commands use."""
    code = (
        "import sys\n"
        "from calhooks.service.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "dev  " in result.stdout
    assert "keygen" in result.stdout


#: What no group's help may load: the clients, servers and engines its commands use.
HELP_HEAVY = (
    "httpx",
    "uvicorn",
    "redis",
    "arq",
    "mcp",
    "cel",
    "calhooks.service.sandbox.app",
    "calhooks.service.calcom.client",
    "calhooks.service.core.settings",
    "calhooks.service.app",
    "calhooks.workers.rules",
)
#: A subcommand of each group that has some, whose own help is built the same way.
SUBCOMMANDS = {
    "connections": "add",
    "dlq": "list",
    "events": "show",
    "mcp": "serve",
    "rules": "test",
    "sandbox": "emit",
    "spool": "quarantine",
    "tools": "call",
    "webhooks": "plan",
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_groups_help_imports_nothing_heavy(name: str) -> None:
    """`calhooks GROUP --help` and `calhooks GROUP COMMAND --help` import the group's module
    only: its heavy imports wait inside the commands (bench/cli_startup.py times it)."""
    helps = [[name, "--help"]]
    if name in SUBCOMMANDS:
        helps.append([name, SUBCOMMANDS[name], "--help"])
    for args in helps:
        code = (
            "import sys\n"
            "from calhooks.service.cli.main import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HELP_HEAVY!r} if m in sys.modules))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
        assert f"Usage: -c {' '.join(args[:-1])}" in result.stdout, args  # its help, no error
        assert result.stdout.strip().splitlines()[-1] == "[]", args


def test_tools_list_does_not_import_the_http_client() -> None:
    """`tools list` needs the registry only."""
    code = (
        "import sys\n"
        "from calhooks.service.cli.main import main\n"
        "try:\n    main(['tools', 'list'])\nexcept SystemExit:\n    pass\n"
        "print('httpx' in sys.modules, 'calhooks.service.calcom.client' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False False"


def test_help_is_plain() -> None:
    """No `<bool>` after flags; a command without subcommands shows no `COMMAND [ARGS]...`."""
    for args in (["--help"], ["worker", "--help"], ["dev", "--help"], ["sandbox", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.stdout, args
        assert "╭" not in result.stdout
    for name in ("worker", "dev", "serve"):
        usage = runner.invoke(app, [name, "--help"]).stdout.splitlines()[0]
        assert usage == f"Usage: calhooks {name} [OPTIONS]"


def test_a_wrong_type_is_said_the_mcp_way() -> None:
    """As the MCP server says it: expected integer, got 'abc'."""
    result = runner.invoke(
        app,
        [
            "tools",
            "call",
            "cal_organizations_users_ooocontroller_get_organization_user_ooo",
            "-p",
            "userId=abc",
        ],
    )
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("userId: expected integer, got 'abc'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["dlq", "list", "--limit", "abc"],
            "Invalid value for '--limit': expected integer, got 'abc'",
        ),
        (["sandbox", "--window", "y"], "Invalid value for '--window': expected number, got 'y'"),
    ],
)
def test_a_wrong_option_type_is_said_the_mcp_way(args: list[str], message: str) -> None:
    """Options too: not pydantic's "Input should be a valid integer"."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_json_means_output() -> None:
    """`tools list --json` and `tools describe --json` print JSON; call's input is --input."""
    listed = json.loads(runner.invoke(app, ["tools", "list", "--json"]).stdout)
    assert len(listed) == 37
    assert set(listed[0]) == {"name", "method", "path", "summary"}
    name = "cal_organizations_users_ooocontroller_get_organization_user_ooo"
    described = json.loads(runner.invoke(app, ["tools", "describe", name, "--json"]).stdout)
    assert described["name"] == name
    assert "userId" in {p["name"] for p in described["parameters"]}
    for spelling in ("--input", "--json"):
        bad = runner.invoke(app, ["tools", "call", name, spelling, "[1]"])
        assert bad.exit_code == 1
        assert bad.stderr.strip() == "error: --input must be a JSON object"


def test_retries_show_only_with_verbose() -> None:
    """An unreachable API: one line; with -v, the retries before it."""
    env = {
        "CALHOOKS_API_URL": f"http://127.0.0.1:{free_port()}",
        "CALHOOKS_API_KEY": "cal_test_key",
        "CALHOOKS_API_RETRIES": "2",
        "CALHOOKS_API_RETRY_BASE_DELAY": "0",
    }
    call = ["tools", "call", "cal_organizations_users_controller_get_organizations_users"]
    quiet = run_cli(*call, "-p", "orgId=1", env=env)
    assert quiet.returncode == 1
    assert len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr
    assert quiet.stderr.startswith("error: ")
    loud = run_cli("-v", *call, "-p", "orgId=1", env=env)
    assert loud.returncode == 1
    assert loud.stderr.count("calcom.retry") == 2, loud.stderr


def test_busy_ports_are_one_line() -> None:
    """serve and sandbox on a port in use: one line naming it, exit 1, no traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        for args in (["serve", "--port", port], ["sandbox", "--port", port]):
            result = run_cli(*args)
            assert result.returncode == 1, result.stderr
            [line] = result.stderr.strip().splitlines()
            assert line.startswith("error: ")
            assert f"port {port}" in line
            assert "already in use" in line


def test_worker_with_a_bad_rules_file_lists_its_problems(tmp_path: Path) -> None:
    """No traceback: the file's problems, before the worker starts."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: x\n    on: NOPE\n")
    result = run_cli("worker", env={"CALHOOKS_RULES_FILE": str(rules), "HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: CALHOOKS_RULES_FILE {rules}: 2 problems")
    assert "unknown trigger 'NOPE'" in result.stderr


def test_a_port_in_time_wait_counts_as_free() -> None:
    """What a stopped server leaves (TIME_WAIT on its side) does not block a restart."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's listener
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end goes to TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    with socket.socket() as plain, pytest.raises(OSError, match="in use"):
        plain.bind(("127.0.0.1", port))  # what the old check did: it tripped on TIME_WAIT
    assert port_free("127.0.0.1", port)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert not port_free("127.0.0.1", port)


def test_no_embedded_redis_outlives_a_command() -> None:
    """`dlq list` on the embedded Redis starts it and stops it again when it ends."""
    with tempfile.TemporaryDirectory(prefix="ch-") as directory:  # short: a unix socket
        _no_orphan(Path(directory))


def _no_orphan(home: Path) -> None:
    result = run_cli("dlq", "list", env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The dead-letter queue is empty."
    sock = home / ".local/share/calhooks/redis/redis.sock"
    assert (home / ".local/share/calhooks/redis").is_dir()
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(OSError, match=r"refused|No such"):
        probe.connect(str(sock))


def test_the_example_rules_ship_in_the_package() -> None:
    """`calhooks dev` runs rules that are package data (examples/rules.yaml links to them)."""
    from calhooks.service.cli.dev import EXAMPLE_RULES

    root = Path(__file__).resolve().parents[2]
    assert root / "workers" / "rules" / "examples" / "rules.yaml" == EXAMPLE_RULES
    assert EXAMPLE_RULES.is_file()
    assert (root / "examples" / "rules.yaml").resolve() == EXAMPLE_RULES
    pyproject = (root / "pyproject.toml").read_text()
    assert '"calhooks.workers.rules" = ["examples/*.yaml"]' in pyproject


def test_dev_keeps_a_data_dir_it_did_not_make(tmp_path: Path) -> None:
    """Only the dev loop's own data directory is wiped at start."""
    from calhooks.service.cli.dev import DEV_MARKER, _wipe_redis

    theirs = tmp_path / "theirs"
    (theirs / "redis").mkdir(parents=True)
    (theirs / "redis" / "appendonly.aof").write_text("data")
    _wipe_redis(theirs)
    assert (theirs / "redis" / "appendonly.aof").exists()
    ours = tmp_path / "ours"
    _wipe_redis(ours)
    (ours / "redis").mkdir()
    (ours / "redis" / "appendonly.aof").write_text("data")
    _wipe_redis(ours)
    assert (ours / DEV_MARKER).exists()
    assert not (ours / "redis").exists()


def test_the_banner_puts_this_calhooks_on_path() -> None:
    """A virtualenv's calhooks (activated or not) gets a PATH entry in the export line."""
    from calhooks.service.cli.dev import command_prefix

    assert command_prefix() == str(CALHOOKS.parent)

"""The CLI commands that only wait for a broker that never answers (about 30 s each: their own
timeout) start as soon as collection is done, side by side, so that they wait while the suite runs
the tests before them; test_boundary.py reads their results through the ``unreachable`` fixture."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from clikit import Running, start_cli

DATA = Path(__file__).resolve().parents[2] / "data"

#: name -> (the command, the address it was given); started once per session
_STARTED: dict[str, tuple[Running, str]] = {}
_WORK: list[Path] = []


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _start() -> dict[str, tuple[Running, str]]:
    if not _STARTED:
        work = Path(tempfile.mkdtemp(prefix="auditor-cli-unreachable-"))
        _WORK.append(work)
        events = work / "e.jsonl"
        events.write_text((DATA / "events" / "ipasar.jsonl").read_text())
        addresses = {name: f"127.0.0.1:{closed_port()}" for name in ("verify", "topics", "produce")}
        addresses["unresolvable"] = "no-such-host.invalid:9092"
        argvs = {"verify": ("verify", f"kafka://{addresses['verify']}/auditor.audit"),
                 "topics": ("topics", "create", "--bootstrap-servers", addresses["topics"]),
                 "unresolvable": ("topics", "create", "--bootstrap-servers", addresses["unresolvable"]),
                 "produce": ("produce", "--bootstrap-servers", addresses["produce"], events)}
        _STARTED.update({name: (start_cli(*argv, timeout=120), addresses[name]) for name, argv in argvs.items()})
    return _STARTED


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that read the waiting commands' results run last in the session, so that the
    commands wait while the others run (tests/unit/cli comes first when tests/unit runs alone, as in
    tests/run_all.sh)."""
    items.sort(key=lambda item: "unreachable" in getattr(item, "fixturenames", ()))  # stable


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any("unreachable" in getattr(item, "fixturenames", ()) for item in session.items):
        _start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for running, _ in _STARTED.values():
        running.stop()
    for work in _WORK:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def unreachable() -> dict[str, tuple[Running, str]]:
    """The waiting commands (started after collection, or now when collection did not)."""
    return _start()

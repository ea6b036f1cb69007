"""Shared fixtures. The worker fixture starts a real `celery -A omnichannel worker` process on the
configured broker (filesystem by default, Redis in CI), pointed at the test database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

if TYPE_CHECKING:
    from channels_line.standin import StandinControl, StandinServer
    from omnichannel.models import MessagingAccount

BASE_DIR = Path(__file__).resolve().parent.parent


def database_url_for(settings_dict: dict) -> str:
    """The DATABASE_URL of the database the tests run on (the test database, once it exists)."""
    if "sqlite" in settings_dict["ENGINE"]:
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


class WorkerProcess:
    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


_worker_logs: list[Path] = []


def pytest_configure(config):
    _flush_retried_on_deadlock()


def pytest_collection_modifyitems(config, items):
    """The tests that use the session's Celery worker (celery_worker) run last, in their order. Once
    started, the worker takes every task queued after it, also those of later tests that never asked
    for it (a routing or delivery task queued by a commit): it changed what such a test saw, and held
    locks while the test's teardown emptied the tables."""
    items[:] = sorted(items, key=lambda item: "celery_worker" in getattr(item, "fixturenames", ()))


def _flush_retried_on_deadlock() -> None:
    """Once the session's Celery worker runs (celery_worker), it also takes the tasks that later
    tests queue (a routing task, say) and may hold a lock while such a test's teardown empties the
    tables (flush: TRUNCATE on PostgreSQL). PostgreSQL then ends one of the two as deadlocked; when
    it is the flush, it is tried again, with the worker's transaction finished."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    handle = flush.Command.handle
    if getattr(handle, "retries_deadlocks", False):
        return

    def handle_retried(self, **options):
        for attempt in range(3):
            try:
                return handle(self, **options)
            except CommandError as error:
                if attempt == 2 or "deadlock detected" not in str(error.__cause__):
                    raise
                time.sleep(0.5)
        return None

    handle_retried.retries_deadlocks = True
    flush.Command.handle = handle_retried


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """When a run fails, show the end of the test worker's log: a stalled worker explains itself there."""
    if exitstatus and _worker_logs and _worker_logs[-1].exists():
        lines = _worker_logs[-1].read_text(errors="replace").splitlines()
        terminalreporter.section("celery worker log (last 80 lines)")
        for line in lines[-80:]:
            terminalreporter.write_line(line)


def _start_worker(env_overrides: dict[str, str], log_path: Path, queues: str | None = None) -> WorkerProcess:
    env = {
        **os.environ,
        # Tasks left by earlier tests may call LINE (the stand-in) with faults set: keep each call short,
        # so that they never hold up the tasks a test is waiting for.
        "LINE_API_TIMEOUT": "3",
        **env_overrides,
        "DATABASE_URL": database_url_for(connection.settings_dict),
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "omnichannel",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        "2",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
    ]
    if queues:
        command += ["-Q", queues]
    _worker_logs.append(log_path)
    log_file = log_path.open("w")
    process = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if " ready." in log_path.read_text(errors="replace"):
            return WorkerProcess(process, log_path)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"Celery worker did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def line_standin() -> Iterator[StandinServer]:
    """One LINE stand-in for the whole run, on a free loopback port, checking every request against
    LINE's OpenAPI descriptions. The worker's LINE hosts point at it; tests reset it between them
    (`line_standin_control`)."""
    from channels_line.standin import StandinServer

    server = StandinServer(host="127.0.0.1", port=0).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup, django_db_blocker, tmp_path_factory, line_standin
) -> Iterator[WorkerProcess]:
    """A real Celery worker process consuming every queue, on the test database, calling LINE's two
    hosts on the session's stand-in."""
    from omnichannel.celery import app

    line_hosts = {"LINE_API_BASE_URL": line_standin.base_url, "LINE_API_DATA_BASE_URL": line_standin.base_url}
    with django_db_blocker.unblock():
        app.control.purge()
        worker = _start_worker(line_hosts, tmp_path_factory.mktemp("worker") / "worker.log")
    yield worker
    worker.process.terminate()
    try:
        worker.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.process.kill()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"Timed out after {timeout}s waiting for {message}")


@pytest.fixture
def broker_is_filesystem() -> bool:
    return settings.CELERY_BROKER_IS_FILESYSTEM


@pytest.fixture(autouse=True)
def _static_files_without_collectstatic(settings):
    """Tests do not run collectstatic; serve static names unhashed instead of from the manifest."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _cache_cleared():
    """Throttle counts live in the shared cache (files under VAR_DIR): each test starts from none."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def live_hub(monkeypatch) -> Iterator:
    """Each test gets its own live hub (omnichannel.live), started only if a page of the test needs
    it and stopped after the test: no thread of an earlier test reads a database that is gone."""
    from omnichannel import live

    hub = live.Hub()
    monkeypatch.setattr(live, "hub", hub)
    yield hub
    hub.stop()


@contextlib.contextmanager
def broker_down() -> Iterator[None]:
    """Point this process's Celery app at a port where nothing listens: a real refused connection."""
    from omnichannel.celery import app

    saved = app.conf.broker_url, app.conf.broker_write_url

    def reset_pools() -> None:
        app._pool = None
        app.amqp._producer_pool = None

    app.conf.broker_url = app.conf.broker_write_url = "redis://127.0.0.1:1/0"
    reset_pools()
    try:
        yield
    finally:
        app.conf.broker_url, app.conf.broker_write_url = saved
        reset_pools()


# --- LINE through the stand-in ----------------------------------------------------------------------


@pytest.fixture
def line_standin_control(line_standin, settings) -> StandinControl:
    """The session's stand-in, emptied for this test, with this process's LINE hosts pointed at it.
    It checks what the product sends against LINE's OpenAPI files, or line-bot-sdk's models without them
    (`line_standin.validation` says which)."""
    from channels_line.standin import StandinControl

    line_standin.state.reset()
    settings.LINE_API_BASE_URL = settings.LINE_API_DATA_BASE_URL = line_standin.base_url
    return StandinControl(line_standin.base_url)


@dataclass
class LineShop:
    """A channel registered in the stand-in, connected as a messaging account in the product, and one
    LINE user who is a friend of its account."""

    control: StandinControl
    account: MessagingAccount
    channel_id: str
    user_id: str

    def act(self, deliver: bool = True, **action: Any) -> dict[str, Any]:
        """The LINE user does something (type=text, image, follow...); the stand-in signs the event and
        POSTs it to the channel's webhook URL unless `deliver` is False."""
        return self.control.act(self.channel_id, {"user_id": self.user_id, **action}, deliver=deliver)

    def sent(self, **filters: Any) -> list[dict[str, Any]]:
        """What LINE received from the product for this channel, oldest first."""
        return self.control.sent(self.channel_id, **filters)

    def quota_used(self) -> int:
        return self.control.request("GET", f"/channels/{self.channel_id}")["quota_used"]

    def webhook_connect(self) -> None:
        """Paste the account's callback URL into the (stand-in) LINE console, as the set-up guide says."""
        self.control.channel_register(channel_id=self.channel_id, webhook_url=self.account.line.callback_url)


LINE_USER_PROFILE = {
    "display_name": "Aiko Tanaka",
    "picture_url": "https://profile.line-scdn.net/0h-aiko-tanaka",
    "status_message": "Tokyo / Osaka",
    "language": "ja",
}


@pytest.fixture
def line_shop(db, line_standin_control) -> LineShop:
    """A fresh stand-in channel and LINE user, connected as a LINE messaging account."""
    from channels_line.services import line_account_create

    channel = line_standin_control.channel_register(bot_display_name="Sakura Shop")
    user = line_standin_control.user_create(channel["channel_id"], **LINE_USER_PROFILE)
    account = line_account_create(
        name=f"Sakura Shop {channel['channel_id']}",
        channel_id=channel["channel_id"],
        channel_secret=channel["channel_secret"],
        channel_access_token=channel["channel_access_token"],
    )
    return LineShop(
        control=line_standin_control,
        account=account,
        channel_id=channel["channel_id"],
        user_id=user["user_id"],
    )


@pytest.fixture
def line_shop_online(line_shop, live_server, settings) -> LineShop:
    """The shop with its webhook served by the live server: the stand-in POSTs events over HTTP and
    signed links (PUBLIC_BASE_URL) point at the live server."""
    settings.PUBLIC_BASE_URL = live_server.url
    line_shop.webhook_connect()
    return line_shop


@pytest.fixture
def standin(settings) -> Iterator:
    """A LINE stand-in of the test's own on a free loopback port, with this process's LINE calls
    (both hosts) pointed at it."""
    from channels_line.standin import StandinServer

    server = StandinServer(host="127.0.0.1", port=0).start()
    settings.LINE_API_BASE_URL = settings.LINE_API_DATA_BASE_URL = server.base_url
    settings.LINE_API_TIMEOUT = 5
    try:
        yield server
    finally:
        server.stop()


def pytest_sessionfinish(session, exitstatus):
    """SQLite leaves -wal and -shm files beside the test database it dropped."""
    from django.conf import settings as django_settings

    name = str(django_settings.DATABASES["default"].get("TEST", {}).get("NAME") or "")
    if "sqlite" in django_settings.DATABASES["default"]["ENGINE"] and name:
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name + suffix)

"""Shared fixtures. The worker fixture starts a real `celery -A omnichannel worker` process on the
configured broker (filesystem by default, Redis in CI), pointed at the test database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def database_url_for(settings_dict: dict) -> str:
    """The DATABASE_URL of the database the tests run on (the test database, once it exists)."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
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


def _start_worker(env_overrides: dict[str, str], log_path: Path, queues: str | None = None) -> WorkerProcess:
    env = {**os.environ, **env_overrides, "DATABASE_URL": database_url_for(connection.settings_dict)}
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
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[WorkerProcess]:
    """A real Celery worker process consuming every queue, on the test database."""
    from omnichannel.celery import app

    with django_db_blocker.unblock():
        app.control.purge()
        worker = _start_worker({}, tmp_path_factory.mktemp("worker") / "worker.log")
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

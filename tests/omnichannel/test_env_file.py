"""Every command finds the settings file `make run` writes (var/local.env) without being told.

The choice is one function of settings.py, tested here on folders of the test's own; the subprocess
tests then start `manage.py` and `celery` as a person would, with ENV_FILE unset and VAR_DIR pointing at
a temporary folder, so that the project's real var/local.env is neither read nor touched."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

from omnichannel.settings import env_file_path

BASE_DIR = Path(__file__).resolve().parents[2]


def test_env_file_named_in_the_environment_wins_over_the_local_file(tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "local.env").write_text("")
    chosen = env_file_path({"ENV_FILE": "/etc/omnichannel.env"}, tmp_path)
    assert chosen == Path("/etc/omnichannel.env")


def test_a_relative_env_file_is_taken_from_the_project_folder_whatever_the_working_folder(tmp_path):
    assert env_file_path({"ENV_FILE": "config/prod.env"}, tmp_path) == tmp_path / "config" / "prod.env"


def test_without_env_file_the_local_file_make_run_wrote_is_read(tmp_path):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "local.env").write_text("")
    assert env_file_path({}, tmp_path) == tmp_path / "var" / "local.env"


def test_the_local_file_is_looked_for_in_var_dir_when_it_is_set(tmp_path):
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    (elsewhere / "local.env").write_text("")
    assert env_file_path({"VAR_DIR": str(elsewhere)}, tmp_path) == elsewhere / "local.env"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "local.env").write_text("")
    assert env_file_path({"VAR_DIR": "data"}, tmp_path) == tmp_path / "data" / "local.env"


def test_without_env_file_or_local_file_dot_env_is_read(tmp_path):
    assert env_file_path({}, tmp_path) == tmp_path / ".env"
    assert env_file_path({"ENV_FILE": ""}, tmp_path) == tmp_path / ".env"


def _local_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """A local.env as scripts/make_local_env.py writes it (DEBUG off: without the file's keys, the
    settings refuse to load)."""
    values = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "DEBUG": "false",
        **extra,
    }
    var_dir.mkdir(parents=True, exist_ok=True)
    (var_dir / "local.env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return values


def _run(command: list[str], var_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    # The parent's environment holds ENV_FILE and the settings of this test run: none may leak in.
    clean = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}}
    return subprocess.run(
        command, cwd=cwd, env={**clean, "VAR_DIR": str(var_dir)}, capture_output=True, text=True, timeout=120
    )


def test_manage_py_reads_the_local_file_without_env_file(tmp_path):
    var_dir = tmp_path / "var"
    values = _local_env(var_dir)
    code = "from django.conf import settings; print(settings.SECRET_KEY)"

    # From another working folder too: the file is found from the project, not from where one stands.
    result = _run([sys.executable, str(BASE_DIR / "manage.py"), "shell", "-c", code], var_dir, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == values["SECRET_KEY"]
    checked = _run([sys.executable, "manage.py", "check"], var_dir, BASE_DIR)
    assert checked.returncode == 0, checked.stderr
    assert "no issues" in checked.stdout


def test_celery_reads_the_local_file_without_env_file(tmp_path):
    var_dir = tmp_path / "var"
    _local_env(var_dir, CELERY_BROKER_URL="redis://broker.example.test:6399/7")

    # `celery report` prints the app's configuration, which comes from the Django settings.
    result = _run([sys.executable, "-m", "celery", "-A", "omnichannel", "report"], var_dir, BASE_DIR)

    assert result.returncode == 0, result.stderr
    assert "CELERY_BROKER_URL: 'redis://broker.example.test:6399/7'" in result.stdout

"""Settings are read once, at start-up: each case runs a fresh Python process with its own environment."""

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parents[2]
PRINT_SETTINGS = (
    "import json, django; from django.conf import settings; django.setup();"
    "db = settings.DATABASES['default'];"
    "print(json.dumps({'engine': db['ENGINE'], 'name': str(db['NAME']), 'options': db.get('OPTIONS', {}),"
    " 'broker': settings.CELERY_BROKER_URL, 'filesystem': settings.CELERY_BROKER_IS_FILESYSTEM,"
    " 'transport': settings.CELERY_BROKER_TRANSPORT_OPTIONS, 'debug': settings.DEBUG,"
    " 'hosts': settings.ALLOWED_HOSTS, 'public': settings.PUBLIC_BASE_URL,"
    " 'line_api': settings.LINE_API_BASE_URL, 'line_data': settings.LINE_API_DATA_BASE_URL}))"
)

PRINT_SECRETS = (
    "import json, django; from django.conf import settings; django.setup();"
    "print(json.dumps({'secret_key': settings.SECRET_KEY, 'field_keys': settings.FIELD_ENCRYPTION_KEYS}))"
)


def fresh_keys() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }


def run_python(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    # Only what a Python process needs: the parent's settings (read from its env file) must not leak in.
    clean = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}}
    full_env = {
        **clean,
        "ENV_FILE": str(tmp_path / "absent.env"),
        "VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "omnichannel.settings",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=full_env, capture_output=True, text=True, timeout=60
    )


def read_settings(env: dict[str, str], tmp_path: Path, code: str = PRINT_SETTINGS) -> dict:
    result = run_python(code, env, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_defaults_are_sqlite_in_wal_mode_and_a_filesystem_broker_under_var_dir(tmp_path):
    values = read_settings({"DEBUG": "true"}, tmp_path)
    assert values["engine"] == "django.db.backends.sqlite3"  # Django's own backend, its own options
    assert values["name"] == str(tmp_path / "var" / "db.sqlite3")
    assert "journal_mode=WAL" in values["options"]["init_command"]
    assert values["options"]["transaction_mode"] == "IMMEDIATE"
    assert values["options"]["timeout"] >= 5
    assert values["broker"] == "filesystem://"
    assert values["transport"]["data_folder_in"].startswith(str(tmp_path / "var"))
    assert (tmp_path / "var" / "broker" / "queue").is_dir()
    assert values["line_api"] == "" and values["line_data"] == ""


def test_database_and_broker_urls_select_postgresql_and_redis(tmp_path):
    values = read_settings(
        {
            "DEBUG": "true",
            "DATABASE_URL": "postgres://app:secret@db.example:5433/omni",
            "CELERY_BROKER_URL": "redis://cache.example:6380/2",
            "ALLOWED_HOSTS": "support.example.com,.example.org",
            "PUBLIC_BASE_URL": "https://support.example.com/",
            "LINE_API_BASE_URL": "http://127.0.0.1:8090/",
            "LINE_API_DATA_BASE_URL": "http://127.0.0.1:8090",
        },
        tmp_path,
    )
    assert values["engine"] == "django.db.backends.postgresql"
    assert values["name"] == "omni"
    assert values["options"]["connect_timeout"] == 5  # libpq alone would wait without limit
    assert values["broker"] == "redis://cache.example:6380/2"
    assert values["filesystem"] is False
    assert values["transport"]["visibility_timeout"] >= 600
    assert values["hosts"] == ["support.example.com", ".example.org"]
    assert values["public"] == "https://support.example.com"
    assert values["line_api"] == "http://127.0.0.1:8090"
    assert values["line_data"] == "http://127.0.0.1:8090"


def test_debug_off_refuses_to_start_without_a_secret_key(tmp_path):
    env = fresh_keys()
    del env["SECRET_KEY"]
    result = run_python("import django; django.setup()", {"DEBUG": "false", **env}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_debug_off_refuses_the_built_in_development_secret_key(tmp_path):
    from omnichannel.settings import INSECURE_DEV_SECRET_KEY

    env = {**fresh_keys(), "SECRET_KEY": INSECURE_DEV_SECRET_KEY}
    result = run_python("import django; django.setup()", {"DEBUG": "false", **env}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_debug_off_refuses_to_start_without_an_encryption_key(tmp_path):
    env = fresh_keys()
    del env["FIELD_ENCRYPTION_KEYS"]
    result = run_python("import django; django.setup()", {"DEBUG": "false", **env}, tmp_path)
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS" in result.stderr


def test_check_deploy_is_clean_with_debug_off(tmp_path):
    code = (
        "import sys; from django.core.management import execute_from_command_line as m; "
        "m(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])"
    )
    result = run_python(code, {"DEBUG": "false", **fresh_keys()}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_debug_without_keys_makes_a_secret_key_and_an_encryption_key_for_this_install(tmp_path):
    values = read_settings({"DEBUG": "true"}, tmp_path, PRINT_SECRETS)

    secret_file = tmp_path / "var" / "secret.key"
    field_file = tmp_path / "var" / "field-encryption.key"
    assert values["secret_key"] == secret_file.read_text().strip()
    assert len(values["secret_key"]) >= 50
    assert values["field_keys"] == [field_file.read_text().strip()]
    Fernet(values["field_keys"][0])  # a valid Fernet key
    for made in (secret_file, field_file):
        assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert sorted(path.name for path in (tmp_path / "var").iterdir() if path.is_file()) == [
        "field-encryption.key",
        "secret.key",
    ]  # no draft left behind


def test_debug_keeps_the_keys_it_made_across_restarts(tmp_path):
    first = read_settings({"DEBUG": "true"}, tmp_path, PRINT_SECRETS)
    second = read_settings({"DEBUG": "true"}, tmp_path, PRINT_SECRETS)
    assert second == first


def test_debug_installs_in_different_var_dirs_get_different_keys(tmp_path):
    one = read_settings({"DEBUG": "true", "VAR_DIR": str(tmp_path / "one")}, tmp_path, PRINT_SECRETS)
    two = read_settings({"DEBUG": "true", "VAR_DIR": str(tmp_path / "two")}, tmp_path, PRINT_SECRETS)
    assert one["secret_key"] != two["secret_key"]
    assert one["field_keys"] != two["field_keys"]


def test_keys_from_the_environment_win_and_no_key_file_is_made(tmp_path):
    keys = fresh_keys()
    values = read_settings({"DEBUG": "true", **keys}, tmp_path, PRINT_SECRETS)
    assert values == {"secret_key": keys["SECRET_KEY"], "field_keys": [keys["FIELD_ENCRYPTION_KEYS"]]}
    assert not (tmp_path / "var" / "secret.key").exists()
    assert not (tmp_path / "var" / "field-encryption.key").exists()


def test_every_periodic_task_names_a_task_the_worker_knows():
    """A beat entry naming no registered task would be dropped by the worker every time, silently."""
    from django.conf import settings

    from omnichannel.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= set(app.tasks), scheduled - set(app.tasks)
    routed = {name for name in settings.CELERY_TASK_ROUTES if not name.endswith("*")}
    assert routed <= set(app.tasks), routed - set(app.tasks)


PRINT_LIMITS = (
    "import json, django; from django.conf import settings; django.setup();"
    "print(json.dumps({'rates': settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'],"
    " 'throttles': settings.REST_FRAMEWORK['DEFAULT_THROTTLE_CLASSES'],"
    " 'proxies': settings.REST_FRAMEWORK['NUM_PROXIES'],"
    " 'failures': settings.AXES_FAILURE_LIMIT, 'cooloff': settings.AXES_COOLOFF_TIME.total_seconds(),"
    " 'lock_by': settings.AXES_LOCKOUT_PARAMETERS, 'cache': settings.CACHES['default']}))"
)


def test_sign_in_lockout_and_api_throttles_have_defaults_shared_by_every_web_process(tmp_path):
    values = read_settings({"DEBUG": "true"}, tmp_path, PRINT_LIMITS)
    assert values["rates"] == {"anon": "60/minute", "user": "1200/minute"}
    assert values["throttles"] == [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ]
    assert values["proxies"] == 0  # X-Forwarded-For, written by the client, is not trusted
    assert values["failures"] == 5
    assert values["cooloff"] == 15 * 60
    assert values["lock_by"] == [["username", "ip_address"]]
    # Not a per-process memory cache: gunicorn's processes must count together.
    assert values["cache"]["BACKEND"] == "django.core.cache.backends.filebased.FileBasedCache"
    assert values["cache"]["LOCATION"] == str(tmp_path / "var" / "cache")


def test_sign_in_lockout_api_throttles_and_cache_are_set_from_the_environment(tmp_path):
    values = read_settings(
        {
            "DEBUG": "true",
            "API_THROTTLE_ANON": "10/minute",
            "API_THROTTLE_USER": "100/hour",
            "LOGIN_FAILURE_LIMIT": "3",
            "LOGIN_COOLOFF_MINUTES": "60",
            "BEHIND_TLS_PROXY": "true",
            "CACHE_URL": "redis://cache.example:6380/3",
        },
        tmp_path,
        PRINT_LIMITS,
    )
    assert values["rates"] == {"anon": "10/minute", "user": "100/hour"}
    assert values["proxies"] == 1  # the address the TLS proxy added
    assert values["failures"] == 3
    assert values["cooloff"] == 3600
    assert values["cache"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert values["cache"]["LOCATION"] == "redis://cache.example:6380/3"

"""The one settings module. Every value comes from the environment (or the file named by ENV_FILE)
through django-environ; `.env.example` documents each variable. Defaults are the embedded mode:
SQLite and a filesystem broker under VAR_DIR, nothing else to install."""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent


def env_file_path(environ: Mapping[str, str], base_dir: Path) -> Path:
    """The file of settings to read: ENV_FILE when set; else `local.env` in VAR_DIR (what `make run`
    writes) when it exists; else `.env`. Relative paths are taken from the project folder. Decided
    here only, so that manage.py, celery, gunicorn and every management command read the same file."""

    def in_project(value: str | Path) -> Path:
        path = Path(value)
        return path if path.is_absolute() else base_dir / path

    if environ.get("ENV_FILE"):
        return in_project(environ["ENV_FILE"])
    local = in_project(environ.get("VAR_DIR") or "var") / "local.env"
    return local if local.is_file() else base_dir / ".env"


env = environ.Env()
ENV_FILE = env_file_path(os.environ, BASE_DIR)
if ENV_FILE.is_file():
    # Values already in the environment win over the file.
    env.read_env(ENV_FILE)

INSECURE_DEV_SECRET_KEY = "django-insecure-dev-only-key-do-not-use-in-production"

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])

# Empty counts as unset (as in env_file_path): never the project folder itself.
VAR_DIR = Path(env.str("VAR_DIR", default="") or BASE_DIR / "var")
if not VAR_DIR.is_absolute():
    VAR_DIR = BASE_DIR / VAR_DIR
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _install_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`, made on first use (mode 0600) and kept, so that a DEBUG install keeps
    reading what it signed and encrypted, and no two installs share a key."""
    if not path.exists():
        fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(make() + "\n")
            # web, worker and beat start together: the first link wins and every process reads its key.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    return path.read_text().strip()


if not DEBUG:
    if not SECRET_KEY or SECRET_KEY == INSECURE_DEV_SECRET_KEY or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set to a random value of at least 50 characters when DEBUG is off "
            "(see .env.example)."
        )
    if not FIELD_ENCRYPTION_KEYS:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS must hold at least one Fernet key when DEBUG is off (see .env.example)."
        )
else:
    SECRET_KEY = SECRET_KEY or _install_secret(VAR_DIR / "secret.key", lambda: secrets.token_urlsafe(50))
    FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or [
        _install_secret(
            VAR_DIR / "field-encryption.key", lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()
        )
    ]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "omnichannel",
    "channels_line",
    "routing",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The signed-in agent's language and time zone (after the user is known).
    "agents.middleware.agent_preferences",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "omnichannel.urls"
WSGI_APPLICATION = "omnichannel.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the workers write to the same file: WAL lets readers and a writer work
    # together, IMMEDIATE transactions take the write lock up front (no deadlock on upgrade), and
    # the busy timeout waits for the lock instead of failing with "database is locked". Every write
    # transaction is short (a webhook's one INSERT, a few events' processing), so waits are too.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    }
    # A file (not memory) so that a worker process started by the tests sees the test database;
    # one per test run, so that two runs on one machine do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # libpq waits for a connection without limit by default; a lost network should fail in seconds.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )
    # A pool per process (Django's, psycopg_pool): a web process runs many threads (each open agent
    # page holds one, README "Live pages"), and a connection per thread would pass PostgreSQL's
    # max_connections. A request takes a connection for its duration and gives it back.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=16),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        # A connection idle this long is closed (the pool keeps min_size).
        "max_idle": 300.0,
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------------------
# What the API throttles count with. It must be shared by every web process (gunicorn runs several;
# a per-process memory cache would let each count on its own): files under VAR_DIR by default, which
# every process of one machine shares; CACHE_URL=redis://... for several machines.
CACHE_URL = env.str("CACHE_URL", default="") or f"filecache://{VAR_DIR / 'cache'}?max_entries=10000"
CACHES = {"default": environ.Env.cache_url_config(CACHE_URL)}

# --- Auth -----------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out username+address before the password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed sign-ins (the agent sign-in page and the admin's alike) are counted per username and client
# address: after LOGIN_FAILURE_LIMIT of them that pair is locked out for LOGIN_COOLOFF_MINUTES, even
# with the right password. Attempts are kept in the database (admin: Axes > Access attempts).
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Internationalisation -------------------------------------------------------------------------
LANGUAGE_CODE = "en"
# The languages of the agent pages (locale/<code>/LC_MESSAGES); an agent chooses theirs
# (AgentProfile.language), else the browser's is used.
LANGUAGES = [("en", "English"), ("ja", "日本語")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media files -----------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Security (strict unless DEBUG; each can be relaxed explicitly, e.g. behind a TLS proxy) -------
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.DjangoModelPermissions"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Requests per client: anonymous callers by address, signed-in users (session or token) by user.
    # Over the rate: 429 with Retry-After. The LINE webhook is a plain Django view, never throttled.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="60/minute"),
        "user": env.str("API_THROTTLE_USER", default="1200/minute"),
    },
    # The client's address is REMOTE_ADDR; behind the TLS proxy, the last X-Forwarded-For entry (the
    # one the proxy added), never an address the client wrote itself.
    "NUM_PROXIES": 1 if SECURE_PROXY_SSL_HEADER else 0,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Omnichannel back office API",
    "DESCRIPTION": "Messaging accounts, conversations and messages.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs page are for signed-in users (session or token), like the API itself.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # out_of_hours_action and open_items_action share one set of choices: one enum in the schema;
    # likewise an agent's presence and a workstream's allowed presences: one enum.
    "ENUM_NAME_OVERRIDES": {
        "OverflowActionEnum": "routing.models.OverflowAction",
        "PresenceEnum": "agents.models.Presence",
    },
    # Swagger UI's files from the drf-spectacular-sidecar package, served as our static files: the
    # docs page works without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: Swagger UI would send the schema's URL to validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- Celery ---------------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_IS_FILESYSTEM = CELERY_BROKER_URL.startswith("filesystem://")
# One task at a time per worker process: with acks_late, a long task never holds others back.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
if CELERY_BROKER_IS_FILESYSTEM:
    for _folder in ("queue", "processed", "control"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # The transport polls its folder, and does not poll while the worker holds its prefetch
        # limit: throughput is about prefetch / interval (the default 1 s interval gave 2 tasks/s).
        "polling_interval": 0.05,
    }
    # The filesystem transport has no fanout exchange: no remote control, no events.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
    CELERY_WORKER_SEND_TASK_EVENTS = False
    # ...except on the polling filesystem transport, where a fetch round is costly (see above).
    CELERY_WORKER_PREFETCH_MULTIPLIER = 8
else:
    # acks_late tasks are redelivered if a worker dies; an hour covers the slowest task with room.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
# A web request that enqueues must not hang on a broker outage: the sweep catches up later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_TASK_IGNORE_RESULT = True
# Celery's Django fixup would close the database connections around every task (a new connection,
# on PostgreSQL a new server process, per task): only every this many tasks instead. Broken or old
# connections are closed around each task by Django's close_old_connections (omnichannel/celery.py).
CELERY_DB_REUSE_MAX = 10_000
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Dedicated queues, so that inbound customer messages are never starved by other work.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name)
    for name in ("inbound", "outbound", "routing", "default", "maintenance")
]
CELERY_TASK_ROUTES = {
    "channels_line.tasks.line_events_process": {"queue": "inbound"},
    "channels_line.tasks.line_message_content_fetch": {"queue": "inbound"},
    "channels_line.tasks.line_message_deliver": {"queue": "outbound"},
    "channels_line.tasks.line_conversation_mark_read": {"queue": "outbound"},
    "channels_line.tasks.line_conversation_typing": {"queue": "outbound"},
    "omnichannel.tasks.*": {"queue": "maintenance"},
    "channels_line.tasks.line_events_sweep": {"queue": "maintenance"},
    "channels_line.tasks.line_attachments_sweep": {"queue": "maintenance"},
    "routing.tasks.conversation_route": {"queue": "routing"},
    "routing.tasks.conversations_routing_sweep": {"queue": "maintenance"},
    "routing.tasks.queue_assign": {"queue": "routing"},
    "routing.tasks.agent_queues_assign": {"queue": "routing"},
    "routing.tasks.offers_expire": {"queue": "maintenance"},
    "routing.tasks.assignment_sweep": {"queue": "maintenance"},
    "routing.tasks.queues_wait_overflow": {"queue": "maintenance"},
    "routing.tasks.conversations_auto_close": {"queue": "maintenance"},
    "routing.tasks.wrap_up_capacity_release_due": {"queue": "maintenance"},
}
# Work whose enqueue may be lost (the broker down, a process killed) is written to the database first;
# a periodic sweep queues again what is still waiting this many seconds after it was due.
QUEUE_SWEEP_AFTER_SECONDS = env.int("QUEUE_SWEEP_AFTER_SECONDS", default=60)
# An outbound message "sending" for longer than this lost its worker: it is taken up again (pushes
# carry a retry key, so LINE never delivers one twice; a reply in doubt is failed for an agent).
DELIVERY_SENDING_TIMEOUT_SECONDS = env.int("DELIVERY_SENDING_TIMEOUT_SECONDS", default=120)
CELERY_BEAT_SCHEDULE = {
    "worker-heartbeat": {"task": "omnichannel.tasks.worker_heartbeat_record", "schedule": 60.0},
    "line-events-sweep": {"task": "channels_line.tasks.line_events_sweep", "schedule": 30.0},
    "line-attachments-sweep": {"task": "channels_line.tasks.line_attachments_sweep", "schedule": 30.0},
    "message-deliveries-sweep": {"task": "omnichannel.tasks.message_deliveries_sweep", "schedule": 30.0},
    "conversations-routing-sweep": {"task": "routing.tasks.conversations_routing_sweep", "schedule": 30.0},
    "offers-expire": {"task": "routing.tasks.offers_expire", "schedule": 5.0},
    "assignment-sweep": {"task": "routing.tasks.assignment_sweep", "schedule": 15.0},
    "queues-wait-overflow": {"task": "routing.tasks.queues_wait_overflow", "schedule": 15.0},
    "conversations-auto-close": {"task": "routing.tasks.conversations_auto_close", "schedule": 60.0},
    "wrap-up-capacity-release": {"task": "routing.tasks.wrap_up_capacity_release_due", "schedule": 30.0},
    "heartbeats-prune": {"task": "omnichannel.tasks.worker_heartbeats_prune", "schedule": crontab(minute=7)},
    "live-notices-prune": {"task": "omnichannel.tasks.live_notices_prune", "schedule": 300.0},
}

# --- LINE -----------------------------------------------------------------------------------------
LINE_API_BASE_URL = env.str("LINE_API_BASE_URL", default="").rstrip("/")
LINE_API_DATA_BASE_URL = env.str("LINE_API_DATA_BASE_URL", default="").rstrip("/")
LINE_API_TIMEOUT = env.float("LINE_API_TIMEOUT", default=10.0)
LINE_WEBHOOK_MAX_BODY_BYTES = env.int("LINE_WEBHOOK_MAX_BODY_BYTES", default=1024 * 1024)
# Seconds a web process keeps an account's webhook credentials in memory (changes made in another
# process take effect within this time; in the same process at once).
LINE_WEBHOOK_ACCOUNT_CACHE_SECONDS = env.float("LINE_WEBHOOK_ACCOUNT_CACHE_SECONDS", default=5.0)
LINE_MEDIA_MAX_BYTES = env.int("LINE_MEDIA_MAX_BYTES", default=200 * 1024 * 1024)
# Largest file an agent may upload to send to a customer (LINE takes images up to 10 MB; larger
# videos and audio are better shared as links).
ATTACHMENT_UPLOAD_MAX_BYTES = env.int("ATTACHMENT_UPLOAD_MAX_BYTES", default=10 * 1024 * 1024)
LINE_PROFILE_MAX_AGE_HOURS = env.int("LINE_PROFILE_MAX_AGE_HOURS", default=24)
LINE_STANDIN_PORT = env.int("LINE_STANDIN_PORT", default=8090)
LINE_OPENAPI_DIR = Path(env.str("LINE_OPENAPI_DIR", default=str(BASE_DIR.parent / "shared" / "line-openapi")))
DOCUMENT_LINK_MAX_AGE_SECONDS = env.int("DOCUMENT_LINK_MAX_AGE_SECONDS", default=7 * 24 * 3600)

# --- Logging --------------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # django-axes announces itself at every start of every command; its lockouts are warnings.
        "axes.apps": {"level": "WARNING"},
    },
}

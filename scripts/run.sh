#!/usr/bin/env bash
# `make run`: migrate, create demo data, then start every process under honcho (Ctrl-C stops all).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENV_FILE="${ENV_FILE:-var/local.env}"
export WEB_PORT="${WEB_PORT:-8000}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:${WEB_PORT}}"
# There is no LINE here: the product talks to the project's LINE stand-in on loopback.
export LINE_STANDIN_PORT="${LINE_STANDIN_PORT:-8090}"
export LINE_API_BASE_URL="${LINE_API_BASE_URL:-http://127.0.0.1:${LINE_STANDIN_PORT}}"
export LINE_API_DATA_BASE_URL="${LINE_API_DATA_BASE_URL:-${LINE_API_BASE_URL}}"
BIN=.venv/bin

# gunicorn runs with --reuse-port (each worker on its own socket, see the README): a second server
# started on a port already served would silently share it, taking half the requests. Refuse instead.
# The stand-in's port is checked too, so that a second `make run` stops here with the reason.
if ! $BIN/python - "WEB_PORT=$WEB_PORT" "LINE_STANDIN_PORT=$LINE_STANDIN_PORT" <<'PY'
import socket, sys
for setting in sys.argv[1:]:
    name, port = setting.split("=")
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", int(port)))
    except OSError as exc:
        sys.exit(f"Port {port} is already in use ({exc.strerror}): stop the server there, or set {name}"
                 f" (e.g. {name}={int(port) + 1} make run).")
    finally:
        probe.close()
PY
then
  exit 1
fi

# Made by `make`; completed here with any setting added since (scripts/make_local_env.py).
$BIN/python scripts/make_local_env.py "$ENV_FILE"
$BIN/python manage.py migrate --noinput -v0
$BIN/python manage.py collectstatic --noinput -v0
$BIN/python manage.py demo_setup

cat <<MSG

  Sign-in page   ${PUBLIC_BASE_URL}/accounts/login/
  Admin site     ${PUBLIC_BASE_URL}/admin/
  API docs       ${PUBLIC_BASE_URL}/api/docs/
  Health         ${PUBLIC_BASE_URL}/healthz   ${PUBLIC_BASE_URL}/readyz
  LINE stand-in  ${LINE_API_BASE_URL}/   (a customer's phone: chat with the demo account)
  Ports          WEB_PORT=${WEB_PORT} LINE_STANDIN_PORT=${LINE_STANDIN_PORT} (set them to change: WEB_PORT=8001 make run)
  Settings       ${ENV_FILE} (read by every command: .venv/bin/python manage.py ..., .venv/bin/celery -A omnichannel ...)

  Press Ctrl-C to stop everything.

MSG
# Procfile.dev: the deployed processes (Procfile) plus the LINE stand-in, a development tool.
exec $BIN/honcho -f Procfile.dev start

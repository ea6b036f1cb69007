#!/usr/bin/env bash
# `make run`: migrate, create demo data, then start every process under honcho (Ctrl-C stops all).
set -euo pipefail
cd "$(dirname "$0")/.."
export ENV_FILE="${ENV_FILE:-var/local.env}"
export WEB_PORT="${WEB_PORT:-8000}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:${WEB_PORT}}"
BIN=.venv/bin

$BIN/python manage.py migrate --noinput -v0
$BIN/python manage.py collectstatic --noinput -v0
$BIN/python manage.py demo_setup

cat <<MSG

  Sign-in page   ${PUBLIC_BASE_URL}/accounts/login/
  Admin site     ${PUBLIC_BASE_URL}/admin/
  API docs       ${PUBLIC_BASE_URL}/api/docs/
  Health         ${PUBLIC_BASE_URL}/healthz   ${PUBLIC_BASE_URL}/readyz

  Press Ctrl-C to stop everything.

MSG
exec $BIN/honcho -f Procfile start

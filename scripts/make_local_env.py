"""Write a local environment file with fresh secrets, for `make run` and `make test` on this machine.

It is made once and kept (var/ is not committed). Production sets these variables itself."""

import base64
import os
import secrets
import sys
from pathlib import Path

TEMPLATE = """\
# Made by scripts/make_local_env.py for this machine only. Do not commit. See .env.example.
SECRET_KEY={secret_key}
FIELD_ENCRYPTION_KEYS={field_key}
# Local runs are served over plain http on loopback: no https redirect, no secure-only cookies.
SECURE_SSL_REDIRECT=false
SESSION_COOKIE_SECURE=false
CSRF_COOKIE_SECURE=false
SECURE_HSTS_SECONDS=0
SECURE_HSTS_INCLUDE_SUBDOMAINS=false
SECURE_HSTS_PRELOAD=false
"""


def main(path: str) -> None:
    target = Path(path)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        TEMPLATE.format(
            secret_key=secrets.token_urlsafe(50),
            field_key=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        )
    )
    target.chmod(0o600)
    print(f"Wrote {target} with fresh secrets.")


if __name__ == "__main__":
    main(sys.argv[1])

"""Write a local environment file with fresh secrets, for `make run` and `make test` on this machine.

It is made once and kept (var/ is not committed); a file made before a setting was added here gets
that setting appended, its other lines untouched. Production sets these variables itself."""

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

# Added to files made before them: every setting a command run by hand needs to find what `make run`
# started (commands read this file; only the processes of `make run` get its exported variables).
LATER_SETTINGS = {
    "LINE_API_BASE_URL": """\
# There is no LINE here: LINE calls go to the project's stand-in, which `make run` starts on
# LINE_STANDIN_PORT (8090). With another port, give LINE_API_BASE_URL to hand-run commands too.
LINE_API_BASE_URL=http://127.0.0.1:8090
LINE_API_DATA_BASE_URL=http://127.0.0.1:8090
""",
}


def main(path: str) -> None:
    target = Path(path)
    if target.exists():
        present = {line.split("=", 1)[0].strip() for line in target.read_text().splitlines() if "=" in line}
        missing = [block for name, block in LATER_SETTINGS.items() if name not in present]
        if missing:
            with target.open("a") as file:
                file.write("".join(missing))
            print(f"Added {', '.join(n for n in LATER_SETTINGS if n not in present)} to {target}.")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        TEMPLATE.format(
            secret_key=secrets.token_urlsafe(50),
            field_key=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        )
        + "".join(LATER_SETTINGS.values())
    )
    target.chmod(0o600)
    print(f"Wrote {target} with fresh secrets.")


if __name__ == "__main__":
    main(sys.argv[1])

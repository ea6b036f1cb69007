"""Create the demo users (an admin, a supervisor, two agents) and demo configuration.

Passwords are generated on the first run, kept in VAR_DIR/demo-credentials.json (mode 600) and
printed on every run. Running it again changes nothing that exists."""

from __future__ import annotations

import json
import os
import secrets

from django.conf import settings
from django.core.management.base import BaseCommand

from agents import services as agents_services
from channels_line.services.demo import line_demo_account_ensure, standin_channels_file
from routing.demo import routing_demo_ensure


class Command(BaseCommand):
    help = "Create demo users and configuration (idempotent) and print how to sign in."

    def handle(self, *args: object, **options: object) -> None:
        path = settings.VAR_DIR / "demo-credentials.json"
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        passwords = {
            spec.username: stored.get(spec.username) or secrets.token_urlsafe(9)
            for spec in agents_services.DEMO_USERS
        }
        path.write_text(json.dumps(passwords, indent=2))
        os.chmod(path, 0o600)

        agents_services.roles_sync()
        created = agents_services.demo_users_ensure(passwords=passwords)
        account, account_created = line_demo_account_ensure(channels_file=standin_channels_file())
        routing_demo = routing_demo_ensure(account=account)

        self.stdout.write(self.style.SUCCESS("Demo users (username / password / role):"))
        for spec in agents_services.DEMO_USERS:
            mark = " (new)" if spec.username in created else ""
            self.stdout.write(f"  {spec.username:<12} {passwords[spec.username]:<16} {spec.role}{mark}")
        state = "created" if account_created else "exists"
        self.stdout.write(
            f"Demo LINE account: {account.name} ({state}), callback {account.line.callback_url}"
        )
        queues = " and ".join(routing_demo.queues)
        self.stdout.write(
            f"Demo routing: workstream {routing_demo.workstream.name} (push), queues {queues}; "
            'a first message containing "invoice" goes to Billing, any other to General'
        )
        self.stdout.write(
            "Try it: sign in as agent1 and accept the demo customer's conversation on the inbox "
            "(each offer lasts two minutes; an agent who lets one run out is set Away: press "
            "Become available and it is offered again); the LINE stand-in's page is the customer's phone."
        )

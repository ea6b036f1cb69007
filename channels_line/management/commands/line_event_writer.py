"""`python manage.py line_event_writer`: store the webhook events of this host's web processes."""

from __future__ import annotations

import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from channels_line.services.event_writer import EventWriterServer


class Command(BaseCommand):
    help = (
        "Run the LINE event writer: web processes on this host hand it their webhook events, and it "
        "stores them in one transaction per round (they store them themselves while it is not running)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--socket",
            default=settings.LINE_WEBHOOK_WRITER_SOCKET,
            help="Unix socket to listen on (default LINE_WEBHOOK_WRITER_SOCKET).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["socket"]:
            raise CommandError("LINE_WEBHOOK_WRITER_SOCKET is empty: web processes store events themselves")
        server = EventWriterServer(options["socket"])
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: server.stop())
        self.stdout.write(f"LINE event writer listening on {server.path}")
        try:
            server.serve()
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from exc

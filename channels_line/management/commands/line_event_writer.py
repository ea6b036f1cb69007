"""`python manage.py line_event_writer`: store the webhook events of this host's web processes."""

from __future__ import annotations

import signal
import threading
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
        stopped = threading.Event()

        def stop(*_: object) -> None:
            stopped.set()
            server.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
        try:
            server.serve()
        except (ValueError, RuntimeError) as exc:
            # The web processes store events themselves meanwhile. Waiting rather than exiting keeps a
            # process manager that stops every process when one ends (honcho, `make run`) running.
            self.stderr.write(f"LINE event writer not started: {exc}. Web processes store events themselves.")
            while not stopped.wait(1):
                pass

"""`python manage.py line_standin`: run the LINE stand-in in the foreground until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from channels_line.standin import StandinServer
from channels_line.standin.demo import channels_file_load_in_background
from channels_line.standin.persistence import StateFileUnreadable
from channels_line.standin.state import DEFAULT_REPLY_TOKEN_TTL_SECONDS, DEFAULT_WEBHOOK_TIMEOUT_SECONDS


class Command(BaseCommand):
    help = (
        "Run the LINE stand-in: LINE's Messaging API (both hosts), webhook calls and a customer phone "
        "page on one address. Point LINE_API_BASE_URL and LINE_API_DATA_BASE_URL at it."
    )

    # The stand-in uses neither the database nor the models: it must start even while they are broken.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument(
            "--port",
            type=int,
            default=settings.LINE_STANDIN_PORT,
            help=f"Port to listen on (default LINE_STANDIN_PORT, {settings.LINE_STANDIN_PORT}).",
        )
        parser.add_argument(
            "--reply-token-ttl",
            type=float,
            default=DEFAULT_REPLY_TOKEN_TTL_SECONDS,
            help="Seconds a reply token stays valid (LINE: about 60).",
        )
        parser.add_argument(
            "--webhook-timeout",
            type=float,
            default=DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
            help="Seconds the stand-in waits for the business's webhook to answer.",
        )

        parser.add_argument(
            "--channels-file",
            help="A JSON file written by `manage.py demo_setup`: the channel and users to register at start.",
        )
        parser.add_argument(
            "--state-file",
            help="A JSON file that keeps channels, LINE users and chats across restarts (restored at start, "
            "written after every change). Without it everything is forgotten on exit.",
        )
        parser.add_argument(
            "--demo-conversation",
            action="store_true",
            help="With --channels-file: once, send a first customer conversation to the product.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            server = StandinServer(
                host=options["host"],
                port=options["port"],
                reply_token_ttl_seconds=options["reply_token_ttl"],
                webhook_timeout_seconds=options["webhook_timeout"],
                state_file=options["state_file"],
            )
        except StateFileUnreadable as error:
            raise CommandError(str(error)) from error
        if server.validation == "openapi":
            validation = f"against LINE's OpenAPI files in {server.openapi_dir}"
        else:
            validation = "against line-bot-sdk's models (LINE_OPENAPI_DIR not found)"
        self.stdout.write(
            f"LINE stand-in on {server.base_url}  (phone page: {server.base_url}/, "
            f"control API: {server.base_url}/_standin/, validating {validation}). Ctrl-C stops."
        )
        if server.state_file is not None:
            self.stdout.write(
                f"Channels, users and chats kept in {server.state_file.path} "
                f"({len(server.state.channels)} channel(s) restored)."
            )
        self.stdout.flush()
        if options["channels_file"]:
            path = Path(options["channels_file"])
            if path.exists():
                channels_file_load_in_background(
                    server.base_url, path, demo_conversation=options["demo_conversation"]
                )
            else:
                self.stderr.write(f"No channels file at {path}: no channel registered.")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("LINE stand-in stopped.")

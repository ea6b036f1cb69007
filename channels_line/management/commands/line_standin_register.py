"""`python manage.py line_standin_register NAME`: make a LINE messaging account chat through the stand-in.

The product sends every account's LINE calls to LINE_API_BASE_URL; `make run` points it at the stand-in,
which plays only the channels registered in it (`make run` registers the demo account). This registers
another account's channel (its credentials and callback URL) in the running stand-in, as an administrator
would set the channel up in the LINE console, so that customers can write to it from the phone page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Value
from django.db.models.functions import Lower

from channels_line.standin.client import StandinControl, StandinControlError
from omnichannel.models import ChannelType, MessagingAccount


class Command(BaseCommand):
    help = "Register a LINE messaging account's channel in the running LINE stand-in (LINE_API_BASE_URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The messaging account's name (capitals and small letters alike).")
        parser.add_argument(
            "--standin-url",
            default=settings.LINE_API_BASE_URL,
            help="The stand-in's address (default LINE_API_BASE_URL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        standin_url = (options["standin_url"] or "").rstrip("/")
        if not standin_url:
            raise CommandError(
                "LINE_API_BASE_URL is not set: this server talks to LINE itself, not to a stand-in. "
                "Give the stand-in's address with --standin-url (make run uses http://127.0.0.1:8090)."
            )
        account = (
            MessagingAccount.objects.select_related("line")
            .alias(name_lower=Lower("name"))
            .filter(
                name_lower=Lower(Value(options["name"])), channel_type=ChannelType.LINE, line__isnull=False
            )
            .first()
        )
        if account is None:
            raise CommandError(f"No LINE messaging account is named {options['name']!r}.")
        line = account.line
        try:
            StandinControl(standin_url).channel_register(
                channel_id=line.channel_id,
                channel_secret=line.channel_secret,
                channel_access_token=line.channel_access_token,
                webhook_url=line.callback_url,
                bot_display_name=account.name,
            )
        except (StandinControlError, OSError) as error:
            raise CommandError(f"The stand-in at {standin_url} did not take the channel: {error}") from error
        self.stdout.write(
            self.style.SUCCESS(f"{account.name}: channel {line.channel_id} registered in the stand-in.")
        )
        self.stdout.write(
            f"Chat as a customer: {standin_url}/?channel={line.channel_id} (add a LINE user with “+ user”)."
        )

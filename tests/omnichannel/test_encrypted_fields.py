import base64
import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from channels_line.models import LineAccount
from channels_line.services import line_account_create

pytestmark = pytest.mark.django_db


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def stored_secret(account_pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT channel_secret FROM channels_line_lineaccount WHERE messaging_account_id = %s",
            [account_pk.hex if connection.vendor == "sqlite" else account_pk],
        )
        return cursor.fetchone()[0]


@pytest.fixture
def account(settings):
    settings.FIELD_ENCRYPTION_KEYS = [new_key()]
    return line_account_create(
        name="Shop", channel_id="1234567890", channel_secret="a" * 32, channel_access_token="t" * 40
    )


def test_secrets_are_stored_encrypted_and_read_back_plain(account):
    column = stored_secret(account.pk)
    assert "a" * 32 not in column
    assert LineAccount.objects.get(pk=account.pk).channel_secret == "a" * 32


def test_rotation_reads_with_an_old_key_and_reencrypts_with_the_new_one(account, settings):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    before = stored_secret(account.pk)
    settings.FIELD_ENCRYPTION_KEYS = [new_key(), old_key]
    assert LineAccount.objects.get(pk=account.pk).channel_secret == "a" * 32

    call_command("secrets_reencrypt")

    assert stored_secret(account.pk) != before
    settings.FIELD_ENCRYPTION_KEYS = settings.FIELD_ENCRYPTION_KEYS[:1]  # the old key is gone now
    assert LineAccount.objects.get(pk=account.pk).channel_access_token == "t" * 40


def test_a_missing_key_gives_a_clear_error(account, settings):
    settings.FIELD_ENCRYPTION_KEYS = [new_key()]
    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted"):
        LineAccount.objects.get(pk=account.pk).channel_secret  # noqa: B018

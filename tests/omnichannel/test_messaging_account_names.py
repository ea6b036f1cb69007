"""Messaging account names are unique without regard to case, in the database itself, and the migration
that brought the rule renames the accounts that broke it, the same way every time."""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from channels_line.services import accounts
from omnichannel.models import MessagingAccount
from tests.factories import LineMessagingAccountFactory, channel_access_token_new, channel_secret_new

BEFORE = [("omnichannel", "0004_attachment_original_name")]
AFTER = [("omnichannel", "0005_messaging_account_name_unique_ci")]


@pytest.mark.django_db
def test_the_database_refuses_a_second_account_whose_name_differs_only_in_case():
    MessagingAccount.objects.create(name="Bangkok Shop")
    with pytest.raises(IntegrityError), transaction.atomic():
        MessagingAccount.objects.create(name="bangkok SHOP")
    MessagingAccount.objects.create(name="Bangkok Shop 2")


@pytest.mark.django_db
def test_a_race_lost_on_the_name_constraint_is_told_as_the_name_in_use(monkeypatch):
    LineMessagingAccountFactory(name="Racer")
    real_refuse_taken = accounts._refuse_taken
    calls = []

    # Two requests cannot be interleaved here on demand: the first check is made to miss the other
    # account, as it would if that account committed just after it; the database's constraint decides.
    def first_check_misses(**kwargs):
        calls.append(kwargs)
        if len(calls) > 1:
            real_refuse_taken(**kwargs)

    monkeypatch.setattr(accounts, "_refuse_taken", first_check_misses)
    with pytest.raises(ValidationError) as raised:
        accounts.line_account_create(
            name="RACER",
            channel_id="1657999001",
            channel_secret=channel_secret_new(),
            channel_access_token=channel_access_token_new(),
        )
    assert raised.value.message_dict == {"name": [accounts.NAME_TAKEN]}
    assert MessagingAccount.objects.filter(name__iexact="racer").count() == 1


@pytest.fixture
def migrated_back_to_the_latest_afterwards():
    """Migrating omnichannel back also unapplies what depends on it (routing, ...): every app goes
    forward to its latest migration afterwards, for the tests that follow."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("migrated_back_to_the_latest_afterwards")
def test_the_migration_renames_names_equal_but_for_case_oldest_first_and_keeps_the_oldest():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old_apps = executor.loader.project_state(BEFORE).apps
    Account = old_apps.get_model("omnichannel", "MessagingAccount")
    start = timezone.now() - datetime.timedelta(days=1)
    names = ["Shop", "SHOP", "shop", "Shop (2)", "Other", "x" * 100, "X" * 100]
    for minutes, name in enumerate(names):
        account = Account.objects.create(name=name)
        # auto_now_add ignores a given value: the creation order is set afterwards.
        Account.objects.filter(pk=account.pk).update(created_at=start + datetime.timedelta(minutes=minutes))

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)

    renamed = list(MessagingAccount.objects.order_by("created_at").values_list("name", flat=True))
    assert renamed == ["Shop", "SHOP (3)", "shop (4)", "Shop (2)", "Other", "x" * 100, "X" * 96 + " (2)"]
    with pytest.raises(IntegrityError), transaction.atomic():
        MessagingAccount.objects.create(name="OTHER")

"""`manage.py demo_setup` also sets up routing for the demo LINE account, once."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from agents.models import AgentProfile, Presence
from routing.models import ChannelInstance, DistributionMode, Queue, RouteToQueueRule, Workstream
from routing.services import routing_decide, routing_facts_sample

pytestmark = pytest.mark.django_db


def test_demo_setup_routes_the_demo_account_and_running_it_again_changes_nothing(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("demo_setup")
    call_command("demo_setup")
    out = capsys.readouterr().out

    (workstream,) = Workstream.objects.all()
    assert workstream.distribution_mode == DistributionMode.PUSH
    assert sorted(Queue.objects.values_list("name", flat=True)) == ["Billing", "General"]
    assert workstream.fallback_queue.name == "General"
    for queue in Queue.objects.all():
        assert sorted(queue.members.values_list("username", flat=True)) == ["agent1", "agent2"]
    (rule,) = RouteToQueueRule.objects.all()
    assert rule.queue.name == "Billing"
    instance = ChannelInstance.objects.get()
    assert instance.workstream == workstream and instance.messaging_account.name == "Demo LINE shop"
    assert set(AgentProfile.objects.values_list("presence", flat=True)) == {Presence.AVAILABLE}
    assert "Demo routing: workstream Demo LINE workstream (push)" in out

    at = workstream.created_at
    invoice = routing_decide(
        workstream=workstream, facts=routing_facts_sample(text="My invoice"), at=at, split_key=1
    )
    hello = routing_decide(
        workstream=workstream, facts=routing_facts_sample(text="Hello"), at=at, split_key=1
    )
    assert (invoice.queue.name, hello.queue.name) == ("Billing", "General")

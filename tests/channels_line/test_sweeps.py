"""Nothing pending forever: work is written first, and the sweeps queue again what a lost enqueue
or a lost worker left behind. Queueing is captured here (the real broker and worker run in
test_recovery.py); every test commits (transaction=True), as production does."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from channels_line.models import EventState, LineWebhookEvent
from channels_line.services import line_attachments_sweep, line_events_process_again, line_events_sweep
from omnichannel.models import AttachmentState, DeliveryState, Message
from omnichannel.services import message_deliveries_sweep, message_retry
from tests.factories import AttachmentFactory, LineWebhookEventFactory, MessageFactory

pytestmark = pytest.mark.django_db(transaction=True)

LONG_AGO = datetime.timedelta(hours=1)


@pytest.fixture
def queued(monkeypatch) -> dict[str, list]:
    """What the sweeps queue, by task, kept here instead of sent."""
    from channels_line import adapter, tasks
    from channels_line.services import intake

    calls: dict[str, list] = {"events": [], "deliveries": [], "downloads": []}

    def events(pks) -> bool:
        calls["events"].append(list(pks))
        return True

    monkeypatch.setattr(intake, "processing_enqueue", events)
    monkeypatch.setattr(
        adapter.LineChannel,
        "message_delivery_schedule",
        lambda self, message: calls["deliveries"].append(message.pk),
    )
    monkeypatch.setattr(tasks.line_message_content_fetch, "delay", lambda pk: calls["downloads"].append(pk))
    return calls


def _pending_outbound(**fields) -> Message:
    return MessageFactory(
        outbound=True, delivery_state=DeliveryState.PENDING, delivery_due_at=timezone.now(), **fields
    )


class TestEventsSweep:
    def test_every_overdue_event_is_queued_at_once_however_many(self, queued, settings):
        settings.QUEUE_SWEEP_AFTER_SECONDS = 60
        account = LineWebhookEventFactory().messaging_account
        LineWebhookEventFactory.create_batch(1200, messaging_account=account)
        LineWebhookEvent.objects.update(received_at=timezone.now() - LONG_AGO)
        fresh = LineWebhookEventFactory(messaging_account=account)  # its own enqueue is under way

        assert line_events_sweep() == 1201
        swept = [pk for call in queued["events"] for pk in call]
        assert len(swept) == len(set(swept)) == 1201 and fresh.pk not in swept
        assert line_events_sweep() == 0  # queued just now: left alone until overdue again

    def test_an_event_queued_again_becomes_overdue_again_after_the_sweep_delay(self, queued, settings):
        settings.QUEUE_SWEEP_AFTER_SECONDS = 60
        event = LineWebhookEventFactory()
        LineWebhookEvent.objects.update(received_at=timezone.now() - LONG_AGO)
        assert line_events_sweep() == 1
        later = timezone.now() + datetime.timedelta(seconds=61)
        assert line_events_sweep(now=later) == 1
        assert queued["events"][-1] == [event.pk]

    def test_an_administrator_processes_failed_events_again_and_only_those(self, queued):
        failed = LineWebhookEventFactory(state=EventState.FAILED, attempts=1, last_error="TypeError: x")
        processed = LineWebhookEventFactory(
            state=EventState.PROCESSED, messaging_account=failed.messaging_account
        )

        assert line_events_process_again(event_pks=[failed.pk, processed.pk]) == 1

        failed.refresh_from_db()
        assert (failed.state, failed.attempts) == (EventState.PENDING, 0)
        assert queued["events"] == [[failed.pk]]


class TestDeliveriesSweep:
    def test_a_pending_message_overdue_is_queued_again_and_a_fresh_one_is_not(self, queued, settings):
        settings.QUEUE_SWEEP_AFTER_SECONDS = 60
        overdue = _pending_outbound()
        Message.objects.filter(pk=overdue.pk).update(delivery_due_at=timezone.now() - LONG_AGO)
        _pending_outbound()
        retrying = _pending_outbound()  # a retry's backoff: due later
        Message.objects.filter(pk=retrying.pk).update(delivery_due_at=timezone.now() + LONG_AGO)

        now = timezone.now()
        assert message_deliveries_sweep(now=now) == 1
        assert queued["deliveries"] == [overdue.pk]
        overdue.refresh_from_db()
        assert overdue.delivery_due_at == now  # queued now: overdue again only after the sweep delay

    def test_a_message_sending_past_its_timeout_goes_back_to_pending_and_is_queued(self, queued, settings):
        settings.DELIVERY_SENDING_TIMEOUT_SECONDS = 120
        stuck = _pending_outbound(delivery_method="push")
        under_way = _pending_outbound()
        Message.objects.filter(pk=stuck.pk).update(
            delivery_state=DeliveryState.SENDING, delivery_due_at=timezone.now() - LONG_AGO
        )
        Message.objects.filter(pk=under_way.pk).update(delivery_state=DeliveryState.SENDING)

        assert message_deliveries_sweep() == 1

        assert queued["deliveries"] == [stuck.pk]
        stuck.refresh_from_db()
        under_way.refresh_from_db()
        assert stuck.delivery_state == DeliveryState.PENDING and stuck.delivery_method == "push"
        assert under_way.delivery_state == DeliveryState.SENDING

    def test_a_delivered_or_failed_message_is_never_swept(self, queued):
        MessageFactory(outbound=True)
        MessageFactory(failed=True)
        Message.objects.update(delivery_due_at=timezone.now() - LONG_AGO)
        assert message_deliveries_sweep() == 0


class TestAgentRetry:
    @pytest.mark.parametrize("state", [DeliveryState.PENDING, DeliveryState.SENDING])
    def test_an_agent_sends_again_a_message_stuck_pending_or_sending(self, queued, state):
        stuck = _pending_outbound(delivery_method="push", delivery_attempts=10)
        Message.objects.filter(pk=stuck.pk).update(
            delivery_state=state, delivery_due_at=timezone.now() - LONG_AGO
        )

        retried = message_retry(message=stuck)

        assert (retried.delivery_state, retried.delivery_attempts) == (DeliveryState.PENDING, 0)
        assert queued["deliveries"] == [stuck.pk]

    def test_a_stuck_reply_sent_again_keeps_its_doubt_so_that_it_fails_with_that_reason_first(self, queued):
        stuck = _pending_outbound(delivery_method="reply")
        Message.objects.filter(pk=stuck.pk).update(
            delivery_state=DeliveryState.SENDING, delivery_due_at=timezone.now() - LONG_AGO
        )
        assert message_retry(message=stuck).delivery_method == "reply"

    def test_a_failed_message_sent_again_is_the_agents_decision_and_goes_as_a_push(self, queued):
        failed = MessageFactory(failed=True, delivery_method="reply")
        assert message_retry(message=failed).delivery_method == ""

    def test_a_message_whose_delivery_is_under_way_cannot_be_sent_again(self, queued):
        from django.core.exceptions import ValidationError

        sending = _pending_outbound()
        Message.objects.filter(pk=sending.pk).update(delivery_state=DeliveryState.SENDING)
        with pytest.raises(ValidationError, match="under way"):
            message_retry(message=sending)
        assert queued["deliveries"] == []


class TestDownloadsSweep:
    def test_a_download_overdue_is_queued_again_and_one_due_later_is_not(self, queued, settings):
        settings.QUEUE_SWEEP_AFTER_SECONDS = 60
        lost = AttachmentFactory(state=AttachmentState.PENDING, fetch_due_at=timezone.now() - LONG_AGO)
        AttachmentFactory(state=AttachmentState.PENDING, fetch_due_at=timezone.now() + LONG_AGO)
        AttachmentFactory(state=AttachmentState.READY, fetch_due_at=timezone.now() - LONG_AGO)

        assert line_attachments_sweep() == 1
        assert queued["downloads"] == [lost.pk]

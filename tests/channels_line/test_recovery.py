"""Work lost on the way is recovered by the sweeps: webhook events and an agent's message taken while the
broker was down, and a delivery whose worker was killed in the middle of its call to LINE. Everything
is real: the broker refusal (`broker_down`), the Celery worker processes, the stand-in's held answers,
and the SIGKILL. Tests call the sweeps themselves, as the beat process would (no beat runs here)."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnreachable
from rest_framework.test import APIClient

import tests.conftest
from channels_line import tasks
from channels_line.models import EventState, LineWebhookEvent
from channels_line.services.intake import line_events_sweep
from omnichannel.models import Conversation, ConversationState, DeliveryState, Direction, Message
from omnichannel.services import message_deliveries_sweep
from tests.conftest import LineShop, WorkerProcess, _start_worker, broker_down, wait_for
from tests.factories import AgentFactory, ConversationFactory, MessageFactory, SocialProfileFactory

pytestmark = pytest.mark.django_db(transaction=True)

# Generous: a loaded CI machine may take a while; every wait polls and ends as soon as it can.
DEADLINE = 60.0
POLL = 0.1
# How long the stand-in holds LINE's answer to the call the worker is killed in. The test only needs
# to notice the call (polled every POLL) and kill the worker within it; the held call then reaches LINE,
# as a call whose caller died may well do.
HOLD_SECONDS = 2.5


def messages_url(conversation: Conversation) -> str:
    return f"/api/v1/conversations/{conversation.pk}/messages/"


def agent_api(conversation: Conversation) -> APIClient:
    """The client of an agent working `conversation` (agents send only in their own conversations)."""
    agent = AgentFactory()
    Conversation.objects.filter(pk=conversation.pk).update(
        state=ConversationState.ACTIVE, assigned_agent=agent
    )
    client = APIClient()
    client.force_authenticate(agent)
    return client


def quiet_conversation(shop: LineShop) -> Conversation:
    """A conversation with the shop's LINE user in which no reply token is at hand."""
    profile = SocialProfileFactory(messaging_account=shop.account, external_id=shop.user_id)
    return ConversationFactory(social_profile=profile)


def broker_refusals(caplog) -> list:
    """Errors logged with the broker's refusal: the enqueue really failed, and was contained."""
    return [
        record
        for record in caplog.records
        if record.exc_info and issubclass(record.exc_info[0], BrokerUnreachable)
    ]


def overdue_by(seconds: int) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds + 1)


def message_settled(message: Message, timeout: float = DEADLINE) -> Message:
    """The message once its delivery has ended, delivered or failed (whichever it is)."""
    return wait_for(
        lambda: (
            Message.objects.filter(pk=message.pk)
            .exclude(delivery_state__in=[DeliveryState.PENDING, DeliveryState.SENDING])
            .first()
        ),
        timeout=timeout,
        interval=POLL,
        message=f"message {message.uuid} to be delivered or failed",
    )


# --- a worker of the test's own, to kill -------------------------------------------------------------


def _process_state(pid: int) -> str | None:
    """The process's state letter (R, S, Z...), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _descendants(pid: int) -> list[int]:
    """Every process under `pid` (its pool children), read from /proc: psutil is not installed."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class DoomedWorker:
    """A second real worker that consumes only a queue of its own, so that the task sent there is
    certainly run by it (the session's worker consumes every usual queue, and delivers the retry)."""

    worker: WorkerProcess
    queue: str

    def deliver(self, message: Message) -> None:
        tasks.line_message_deliver.apply_async((message.pk,), queue=self.queue)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children, as the OOM killer or a lost machine would: no
        task is acked, rejected or requeued, nothing more is written. The main process is stopped first
        so that it cannot see a child die (and requeue its task) or fork a new one."""
        main = self.worker.process.pid
        if self.worker.process.poll() is not None:
            return
        os.kill(main, signal.SIGSTOP)
        family = [main, *_descendants(main)]
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.worker.process.wait(timeout=10)
        # An orphaned pool child is reaped by init: dead is gone or a zombie.
        wait_for(
            lambda: all(_process_state(pid) in (None, "Z") for pid in family),
            timeout=10,
            interval=POLL,
            message=f"worker processes {family} to die",
        )


@pytest.fixture
def doomed_worker(celery_worker, line_standin, tmp_path) -> Iterator[DoomedWorker]:
    # A queue name of this run's own: with Redis, the killed worker's unacked task comes back to its
    # queue after the visibility timeout (an hour), and no later run may consume it. The filesystem
    # broker removes a message's file when a worker takes it: it never comes back at all. Either way
    # the only delivery after the kill is the sweep's, on the usual queue.
    queue = f"recovery-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "doomed-worker.log"
    worker = _start_worker(
        {
            "LINE_API_BASE_URL": line_standin.base_url,
            "LINE_API_DATA_BASE_URL": line_standin.base_url,
            # Well above HOLD_SECONDS: the held call must still be waiting when the worker is killed.
            "LINE_API_TIMEOUT": "15",
        },
        log_path,
        queues=queue,
    )
    doomed = DoomedWorker(worker=worker, queue=queue)
    try:
        yield doomed
    finally:
        doomed.kill()
        # A failure report should show the session worker's log, which does the recovering.
        if log_path in tests.conftest._worker_logs:
            tests.conftest._worker_logs.remove(log_path)


# --- the broker down ---------------------------------------------------------------------------------


@pytest.mark.worker
def test_webhooks_taken_while_the_broker_is_down_are_answered_200_and_processed_once_after_the_sweep(
    line_shop_online, celery_worker, settings, caplog
):
    shop = line_shop_online
    texts = ["Is the shop open today?", "I ordered #2051 yesterday", "Can I pay on delivery?"]

    # The live server runs in this process: its enqueue after commit meets the refused connection.
    with broker_down():
        results = [shop.act(type="text", text=text) for text in texts]

    assert [result["delivery"]["status"] for result in results] == [200, 200, 200]
    assert len(broker_refusals(caplog)) == 3
    assert "LINE events not enqueued (the sweep will)" in caplog.text
    event_ids = [result["webhook_event_ids"][0] for result in results]
    events = LineWebhookEvent.objects.filter(webhook_event_id__in=event_ids)
    assert sorted(events.values_list("state", "enqueued_at")) == [(EventState.PENDING, None)] * 3

    # Events just received are left alone: their enqueue may still be on its way.
    assert line_events_sweep() == 0
    # Aged rather than QUEUE_SWEEP_AFTER_SECONDS set to 0: the sweep keeps the threshold it has in
    # production, and the line above shows it holds. (No beat process runs in the tests: the test
    # calls the sweep as the beat task would.)
    events.update(received_at=F("received_at") - overdue_by(settings.QUEUE_SWEEP_AFTER_SECONDS))
    assert line_events_sweep() == 3
    # Queued now: the next sweeps leave them to the worker.
    assert line_events_sweep() == 0

    wait_for(
        lambda: events.filter(state=EventState.PROCESSED).count() == 3,
        timeout=DEADLINE,
        interval=POLL,
        message="the worker to process the swept events",
    )
    for result, text in zip(results, texts, strict=True):
        event = LineWebhookEvent.objects.select_related("message").get(
            webhook_event_id=result["webhook_event_ids"][0]
        )
        assert event.attempts == 1
        assert (event.message.external_id, event.message.text) == (result["message_ids"][0], text)
        assert (
            Message.objects.filter(external_id=result["message_ids"][0], direction=Direction.INBOUND).count()
            == 1
        )
    assert Conversation.objects.count() == 1


@pytest.mark.worker
def test_a_message_sent_while_the_broker_is_down_is_accepted_and_the_sweep_has_it_delivered_once(
    line_shop, celery_worker, settings, caplog
):
    shop = line_shop
    conversation = quiet_conversation(shop)

    with broker_down():
        response = agent_api(conversation).post(
            messages_url(conversation), {"text": "Your refund was sent today."}, format="json"
        )

    assert response.status_code == 202, response.content
    assert response.json()["delivery_state"] == "pending"
    assert len(broker_refusals(caplog)) == 1
    message = Message.objects.get(uuid=response.json()["uuid"])

    # Due just now: not the sweep's yet.
    assert message_deliveries_sweep() == 0
    Message.objects.filter(pk=message.pk).update(
        delivery_due_at=F("delivery_due_at") - overdue_by(settings.QUEUE_SWEEP_AFTER_SECONDS)
    )
    assert message_deliveries_sweep() == 1

    message = message_settled(message)
    assert (message.delivery_state, message.delivery_error) == (DeliveryState.DELIVERED, "")
    assert (message.delivery_method, message.delivery_attempts) == ("push", 1)
    assert [(s["method"], s["retry_key"], s["message"]) for s in shop.sent()] == [
        ("push", str(message.uuid), {"type": "text", "text": "Your refund was sent today."})
    ]


def test_sending_a_stuck_message_again_while_the_broker_is_down_answers_202(line_shop, settings, caplog):
    stuck_since = timezone.now() - overdue_by(settings.QUEUE_SWEEP_AFTER_SECONDS)
    stuck = MessageFactory(
        conversation=quiet_conversation(line_shop),
        outbound=True,
        delivery_state=DeliveryState.PENDING,
        delivery_due_at=stuck_since,
    )

    with broker_down():
        response = agent_api(stuck.conversation).post(
            f"{messages_url(stuck.conversation)}{stuck.uuid}/retry/"
        )

    assert response.status_code == 202, response.content
    assert (response.json()["uuid"], response.json()["delivery_state"]) == (str(stuck.uuid), "pending")
    assert len(broker_refusals(caplog)) == 1
    stuck.refresh_from_db()
    # Due again from now: the sweep queues it once the broker is back.
    assert stuck.delivery_state == DeliveryState.PENDING
    assert stuck.delivery_due_at > stuck_since


# --- a worker killed in the middle of a call to LINE ----------------------------------------------------


def kill_during_the_call(shop: LineShop, doomed: DoomedWorker, message: Message, path: str) -> None:
    """Have the doomed worker deliver `message`, let the stand-in hold its call to `path`, kill the
    worker while the call is held, and wait until the held call has reached LINE after all."""
    shop.control.fault_add(path, delay_seconds=HOLD_SECONDS)
    doomed.deliver(message)
    # The stand-in takes the fault (it disarms) as the call arrives, then holds the answer.
    wait_for(
        lambda: shop.control.faults() == [],
        timeout=DEADLINE,
        interval=POLL,
        message=f"the doomed worker's call to {path}",
    )
    doomed.kill()
    wait_for(lambda: shop.sent(), timeout=DEADLINE, interval=POLL, message="the held call to reach LINE")


@pytest.mark.worker
def test_a_push_whose_worker_was_killed_is_pushed_again_by_the_sweep_and_the_customer_gets_it_once(
    line_shop, celery_worker, doomed_worker, settings
):
    shop = line_shop
    message = MessageFactory(
        conversation=quiet_conversation(shop),
        outbound=True,
        delivery_state=DeliveryState.PENDING,
        delivery_due_at=timezone.now(),
        text="Your parcel is with the courier.",
    )

    kill_during_the_call(shop, doomed_worker, message, "/v2/bot/message/push")

    message.refresh_from_db()
    assert (message.delivery_state, message.delivery_method, message.delivery_attempts) == (
        DeliveryState.SENDING,
        "push",
        1,
    )
    # An attempt under way is left alone until DELIVERY_SENDING_TIMEOUT_SECONDS have passed.
    assert message_deliveries_sweep() == 0
    Message.objects.filter(pk=message.pk).update(
        delivery_due_at=F("delivery_due_at") - overdue_by(settings.DELIVERY_SENDING_TIMEOUT_SECONDS)
    )
    # A probe: the next push is held 10 ms, so that the stand-in counts it (the fault disarms).
    shop.control.fault_add("/v2/bot/message/push", delay_seconds=0.01)
    assert message_deliveries_sweep() == 1

    message = message_settled(message)
    assert (message.delivery_state, message.delivery_error) == (DeliveryState.DELIVERED, "")
    assert (message.delivery_method, message.delivery_attempts) == ("push", 2)
    # The session worker pushed again (the probe was taken) with the same retry key; LINE answered 409
    # and kept the message it had: the customer has it once.
    assert shop.control.faults() == []
    assert [(s["method"], s["retry_key"], s["message"]["text"]) for s in shop.sent()] == [
        ("push", str(message.uuid), "Your parcel is with the courier.")
    ]
    assert shop.quota_used() == 1


@pytest.mark.worker
def test_a_reply_whose_worker_was_killed_is_not_sent_again_but_failed_for_an_agent(
    line_shop_online, celery_worker, doomed_worker, settings
):
    shop = line_shop_online
    written = shop.act(type="text", text="Can I change my delivery address?")
    assert written["delivery"]["status"] == 200, written["delivery"]
    event = wait_for(
        lambda: LineWebhookEvent.objects.filter(
            webhook_event_id=written["webhook_event_ids"][0], state=EventState.PROCESSED
        ).first(),
        timeout=DEADLINE,
        interval=POLL,
        message="the worker to process the customer's message",
    )
    message = MessageFactory(
        conversation=event.conversation,
        outbound=True,
        delivery_state=DeliveryState.PENDING,
        delivery_due_at=timezone.now(),
        text="Yes: send us the new address here.",
    )

    kill_during_the_call(shop, doomed_worker, message, "/v2/bot/message/reply")

    message.refresh_from_db()
    assert (message.delivery_state, message.delivery_method, message.delivery_attempts) == (
        DeliveryState.SENDING,
        "reply",
        1,
    )
    assert message_deliveries_sweep() == 0
    Message.objects.filter(pk=message.pk).update(
        delivery_due_at=F("delivery_due_at") - overdue_by(settings.DELIVERY_SENDING_TIMEOUT_SECONDS)
    )
    assert message_deliveries_sweep() == 1

    message = message_settled(message)
    assert message.delivery_state == DeliveryState.FAILED
    assert "may have reached the customer" in message.delivery_error
    assert message.delivery_attempts == 1  # taken up, but not attempted again
    # The reply reached LINE once, with the customer's token; nothing was pushed after it.
    assert [(s["method"], s["reply_token"], s["message"]["text"]) for s in shop.sent()] == [
        ("reply", written["reply_tokens"][0], "Yes: send us the new address here.")
    ]
    assert shop.quota_used() == 0

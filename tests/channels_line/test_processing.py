"""Event processing, called as the worker calls it (the worker itself: test_end_to_end.py)."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from channels_line.models import EventState, LineWebhookEvent
from channels_line.services import line_event_process, line_events_sweep, line_webhook_receive
from omnichannel.models import (
    AttachmentState,
    Conversation,
    ConversationState,
    Message,
    MessageKind,
    SocialProfile,
    ThreadType,
)
from omnichannel.services import conversation_close
from tests.channels_line.payloads import body_bytes, load_payload, sign

# The production path: every transaction commits (no test transaction around them), and what is
# queued after a commit is captured instead of sent (no worker runs here: test_end_to_end.py).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def downloads(monkeypatch, enqueued) -> list[int]:
    """The media downloads queued after processing's commits, kept here instead of sent."""
    from channels_line.tasks import line_message_content_fetch

    queued: list[int] = []
    monkeypatch.setattr(line_message_content_fetch, "delay", queued.append)
    return queued


def receive(account, payload) -> list[LineWebhookEvent]:
    body = body_bytes(payload)
    line_webhook_receive(account=account, body=body, signature=sign(body, account.line.channel_secret))
    ids = [e["webhookEventId"] for e in payload["events"]]
    return list(LineWebhookEvent.objects.filter(webhook_event_id__in=ids).order_by("id"))


def process(account, name: str, **kwargs) -> LineWebhookEvent:
    (event,) = receive(account, load_payload(name, **kwargs))
    return line_event_process(event_pk=event.pk)


@pytest.fixture(autouse=True)
def _offline(no_line):
    """LINE calls (profile, content) fail fast here; test_end_to_end.py runs them against the stand-in."""


def test_a_text_message_creates_profile_conversation_and_message_with_raw_json(line_account):
    event = process(line_account, "message_text__user", fresh=True)

    assert event.state == EventState.PROCESSED
    message = Message.objects.select_related("conversation", "sender_profile").get()
    assert message.kind == MessageKind.TEXT
    assert message.text == event.raw["message"]["text"]
    assert message.external_id == event.raw["message"]["id"]
    assert message.raw == event.raw
    assert message.sent_at == event.line_timestamp
    assert message.sender_profile.external_id == event.source_user_id
    assert message.conversation.state == ConversationState.OPEN
    assert message.conversation.thread_type == ThreadType.USER
    assert message.payload["markAsReadToken"] == event.raw["message"]["markAsReadToken"]
    assert event.conversation == message.conversation and event.message == message


def test_processing_an_event_twice_changes_nothing(line_account):
    event = process(line_account, "message_text__user", fresh=True)
    event.state = EventState.PENDING  # as if a second delivery of the task raced the first
    event.save(update_fields=["state"])
    line_event_process(event_pk=event.pk)
    assert Message.objects.count() == 1
    assert Conversation.objects.count() == 1


def test_later_messages_continue_the_open_conversation_in_line_timestamp_order(line_account):
    first = load_payload("message_text__user", fresh=True)
    second = load_payload("message_text__user", fresh=True)
    # Delivered out of order: the second event is older.
    second["events"][0]["timestamp"] = first["events"][0]["timestamp"] - 5000
    for payload in (first, second):
        (event,) = receive(line_account, payload)
        line_event_process(event_pk=event.pk)
    conversation = Conversation.objects.get()
    assert [m.external_id for m in conversation.messages.all()] == [
        second["events"][0]["message"]["id"],
        first["events"][0]["message"]["id"],
    ]


def test_a_message_after_close_opens_a_new_conversation(line_account):
    process(line_account, "message_text__user", fresh=True)
    conversation_close(conversation=Conversation.objects.get())
    process(line_account, "message_text__user", fresh=True)
    assert Conversation.objects.count() == 2
    assert Conversation.objects.exclude(state=ConversationState.CLOSED).count() == 1
    assert SocialProfile.objects.count() == 1


def test_one_open_conversation_per_thread_is_held_by_the_database(line_account):
    process(line_account, "message_text__user", fresh=True)
    existing = Conversation.objects.get()
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.create(
            messaging_account=line_account,
            thread_id=existing.thread_id,
            social_profile=existing.social_profile,
        )


def test_a_sticker_keeps_its_ids_and_an_image_url(line_account):
    event = process(line_account, "message_sticker__animated", fresh=True)
    message = Message.objects.get()
    assert message.kind == MessageKind.STICKER
    assert message.payload["package_id"] == event.raw["message"]["packageId"]
    assert message.payload["sticker_id"] == event.raw["message"]["stickerId"]
    assert message.payload["image_url"].endswith(
        f"/sticker/{event.raw['message']['stickerId']}/android/sticker.png"
    )


def test_a_location_keeps_title_address_and_coordinates(line_account):
    event = process(line_account, "message_location__with_title", fresh=True)
    message = Message.objects.get()
    assert message.kind == MessageKind.LOCATION
    for key in ("title", "address", "latitude", "longitude"):
        assert message.payload[key] == event.raw["message"][key]


def test_an_image_from_line_waits_for_download(line_account, downloads):
    process(line_account, "message_image__line_provider", fresh=True)
    attachment = Message.objects.get().attachments.get()
    assert attachment.state == AttachmentState.PENDING
    assert attachment.fetch_due_at is not None  # due now: the sweep queues it should the enqueue be lost
    assert downloads == [attachment.pk]  # the content download, queued after the commit


def test_an_image_from_an_external_provider_is_recorded_by_url(line_account):
    event = process(line_account, "message_image__external_provider", fresh=True)
    attachment = Message.objects.get().attachments.get()
    assert attachment.state == AttachmentState.EXTERNAL
    assert attachment.external_url == event.raw["message"]["contentProvider"]["originalContentUrl"]


def test_a_file_over_the_size_cap_is_not_downloaded(line_account, settings):
    settings.LINE_MEDIA_MAX_BYTES = 10
    process(line_account, "message_file__pdf", fresh=True)
    message = Message.objects.get()
    assert message.kind == MessageKind.FILE
    attachment = message.attachments.get()
    assert attachment.state == AttachmentState.TOO_LARGE
    assert attachment.file_name.endswith(".pdf")


def test_an_unsend_removes_the_content_and_keeps_a_marker(line_account):
    original = process(line_account, "message_text__user")
    process(line_account, "unsend__user")
    message = Message.objects.get(external_id=original.raw["message"]["id"])
    assert message.unsent_at is not None
    assert message.text == ""
    assert "unsend" in message.raw


def test_an_edit_keeps_the_history_and_shows_the_new_text(line_account):
    original = process(line_account, "message_text__group")
    edited = process(line_account, "messageEdited__text")
    message = Message.objects.get(external_id=original.raw["message"]["id"])
    assert message.text == edited.raw["message"]["text"]
    edit = message.edits.get()
    assert edit.previous_text == original.raw["message"]["text"]
    assert edit.new_text == edited.raw["message"]["text"]


def test_unfollow_marks_the_profile_unreachable_and_follow_makes_it_reachable_again(line_account):
    process(line_account, "message_text__user", fresh=True)
    process(line_account, "unfollow__user", fresh=True)
    profile = SocialProfile.objects.get()
    assert profile.is_reachable is False
    assert Message.objects.filter(kind=MessageKind.EVENT, payload__event="unfollow").exists()

    process(line_account, "follow__unblocked", fresh=True)
    profile.refresh_from_db()
    assert profile.is_reachable is True
    assert Message.objects.get(payload__event="follow").payload["unblocked"] is True


def test_an_older_unfollow_arriving_late_does_not_override_a_newer_follow(line_account):
    follow = load_payload("follow__user", fresh=True)
    unfollow = load_payload("unfollow__user", fresh=True)
    unfollow["events"][0]["timestamp"] = follow["events"][0]["timestamp"] - 60_000
    for payload in (follow, unfollow):
        (event,) = receive(line_account, payload)
        line_event_process(event_pk=event.pk)
    assert SocialProfile.objects.get().is_reachable is True


def test_a_postback_is_stored_as_a_customer_action_with_its_params(line_account):
    event = process(line_account, "postback__datetime_params", fresh=True)
    message = Message.objects.get()
    assert message.kind == MessageKind.POSTBACK
    assert message.payload["data"] == event.raw["postback"]["data"]
    assert message.payload["params"] == event.raw["postback"]["params"]


def test_a_standby_message_is_stored_but_its_reply_token_is_never_kept(line_account):
    payload = load_payload("message_text__standby_mode", fresh=True)
    payload["events"][0]["replyToken"] = "a" * 32  # even if LINE sent one
    (event,) = receive(line_account, payload)
    line_event_process(event_pk=event.pk)
    event.refresh_from_db()
    assert event.reply_token == ""
    assert Message.objects.get().payload["standby"] is True


def test_group_and_room_messages_go_to_one_conversation_per_group_or_room(line_account):
    group = process(line_account, "message_text__group", fresh=True)
    room = process(line_account, "message_text__room", fresh=True)
    by_type = {c.thread_type: c for c in Conversation.objects.all()}
    assert by_type[ThreadType.GROUP].thread_id == group.source_group_id
    assert by_type[ThreadType.ROOM].thread_id == room.source_room_id
    assert by_type[ThreadType.GROUP].social_profile is None
    assert (
        Message.objects.get(conversation=by_type[ThreadType.GROUP]).sender_profile.external_id
        == group.source_user_id
    )


def test_join_and_member_events_are_markers_in_the_group_conversation(line_account):
    process(line_account, "join__group", fresh=True)
    process(line_account, "memberJoined__group", fresh=True)
    process(line_account, "memberLeft__group", fresh=True)
    conversation = Conversation.objects.get()
    assert [m.payload["event"] for m in conversation.messages.all()] == ["join", "memberJoined", "memberLeft"]


def test_an_unknown_event_type_is_kept_raw_and_flagged(line_account):
    event = process(line_account, "unknown__future_type", fresh=True)
    assert event.state == EventState.PROCESSED
    assert LineWebhookEvent.objects.get().raw["type"] == event.raw["type"]
    flagged = Message.objects.get(is_flagged=True)
    assert event.raw["type"] in flagged.text


def test_beacon_account_link_and_video_events_join_the_open_conversation(line_account):
    process(line_account, "message_text__user", fresh=True)
    for name in ("beacon__enter", "accountLink__ok", "videoPlayComplete__user"):
        process(line_account, name, fresh=True)
    assert sorted(
        Message.objects.filter(kind=MessageKind.EVENT).values_list("payload__event", flat=True)
    ) == ["accountLink", "beacon", "videoPlayComplete"]


def test_a_profile_is_created_even_when_line_cannot_be_reached(line_account):
    process(line_account, "message_text__user", fresh=True)
    profile = SocialProfile.objects.get()
    assert profile.profile_fetched_at is None  # fetched again on the next event


def test_the_sweep_enqueues_old_pending_events_once(line_account, enqueued):
    (event,) = receive(line_account, load_payload("message_text__user", fresh=True))
    LineWebhookEvent.objects.filter(pk=event.pk).update(
        received_at=timezone.now() - datetime.timedelta(minutes=5)
    )
    assert line_events_sweep() == 1
    assert enqueued[-1] == [event.pk]
    assert line_events_sweep() == 0  # swept recently: not again yet
    assert LineWebhookEvent.objects.get().enqueued_at is not None


def test_concurrent_first_messages_of_a_new_user_give_one_profile_and_one_conversation(line_account):
    if connection.vendor == "sqlite":
        pass  # SQLite serialises writers (IMMEDIATE transactions); the race still runs through the code.
    user_id = "U" + "ab" * 16
    events = [
        e
        for _ in range(6)
        for e in receive(line_account, load_payload("message_text__user", fresh=True, user_id=user_id))
    ]
    barrier = threading.Barrier(len(events))
    errors: list[BaseException] = []

    def work(pk: int) -> None:
        try:
            barrier.wait()
            line_event_process(event_pk=pk)
        except BaseException as exc:  # collected and reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(e.pk,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert SocialProfile.objects.filter(external_id=user_id).count() == 1
    assert Conversation.objects.filter(thread_id=user_id).count() == 1
    assert Message.objects.count() == 6


def test_two_workers_with_crossing_customers_each_process_their_batch_at_the_first_try(line_account):
    """Worker 1 has customer A's message then B's, worker 2 B's then A's, all first contacts. Taking
    the conversations one by one in that order deadlocked on PostgreSQL (each waiting for the
    other's new conversation); the processing now locks them together, in one order."""
    from channels_line.services import line_events_process

    for round_ in range(5):
        a, b = (f"U{round_:02d}{side * 30}" for side in "ab")
        first = receive(line_account, load_payload("message_text__user", fresh=True, user_id=a))
        first += receive(line_account, load_payload("message_text__user", fresh=True, user_id=b))
        second = receive(line_account, load_payload("message_text__user", fresh=True, user_id=b))
        second += receive(line_account, load_payload("message_text__user", fresh=True, user_id=a))
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def work(events: list[LineWebhookEvent], barrier: threading.Barrier, errors: list) -> None:
            try:
                barrier.wait()
                line_events_process(event_pks=[e.pk for e in events])
            except BaseException as exc:  # collected and reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=work, args=(batch, barrier, errors)) for batch in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert errors == []
        events = LineWebhookEvent.objects.filter(pk__in=[e.pk for e in first + second])
        assert sorted(events.values_list("state", "attempts")) == [(EventState.PROCESSED, 1)] * 4
        assert Conversation.objects.filter(thread_id__in=[a, b]).count() == 2


def test_a_failing_event_does_not_undo_the_others_of_its_batch_and_a_bug_fails_it_at_once(
    line_account, monkeypatch
):
    from channels_line.services import inbound, line_events_process

    monkeypatch.setattr(inbound, "EVENTS_PER_TRANSACTION", 8)  # one transaction

    def broken(event, profile):  # stands in for a bug in one handler: no retry can pass it
        raise RuntimeError("handler bug")

    monkeypatch.setitem(inbound.HANDLERS, "postback", broken)
    text = receive(line_account, load_payload("message_text__user", fresh=True))[0]
    postback = receive(line_account, load_payload("postback__plain", fresh=True))[0]

    line_events_process(event_pks=[text.pk, postback.pk])

    text.refresh_from_db()
    postback.refresh_from_db()
    assert text.state == EventState.PROCESSED and Message.objects.count() == 1
    assert (postback.state, postback.attempts) == (EventState.FAILED, 1)
    assert postback.last_error == "RuntimeError: handler bug"


def test_an_event_failing_for_a_passing_reason_stays_pending_and_fails_after_five_tries(
    line_account, monkeypatch
):
    from channels_line.services import inbound, line_events_process

    def database_gone(event, profile):  # stands in for a deadlock or a database restart
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setitem(inbound.HANDLERS, "postback", database_gone)
    postback = receive(line_account, load_payload("postback__plain", fresh=True))[0]

    line_events_process(event_pks=[postback.pk])
    postback.refresh_from_db()
    assert (postback.state, postback.attempts) == (EventState.PENDING, 1)
    assert postback.last_error == "OperationalError: server closed the connection unexpectedly"
    for _ in range(4):
        line_events_process(event_pks=[postback.pk])
    postback.refresh_from_db()
    assert (postback.state, postback.attempts) == (EventState.FAILED, 5)


def test_a_conversation_undone_with_a_failing_event_is_created_again_by_the_next_event_of_its_batch(
    line_account, monkeypatch
):
    """Open conversations are read once per transaction; an event that fails after creating one has
    it undone by its savepoint, and the next event of the same customer must not use it."""
    from channels_line.services import inbound, line_events_process

    monkeypatch.setattr(inbound, "EVENTS_PER_TRANSACTION", 8)  # one transaction

    handle = inbound.HANDLERS["message"]
    calls = []

    def fails_once_after_creating_the_conversation(event, profile):
        calls.append(event.pk)
        if len(calls) == 1:
            inbound._conversation(event, profile, create=True)
            raise OperationalError("passing failure")
        return handle(event, profile)

    monkeypatch.setitem(inbound.HANDLERS, "message", fails_once_after_creating_the_conversation)
    first = load_payload("message_text__user", fresh=True)
    second = load_payload("message_text__user", fresh=True)
    second["events"][0]["source"] = first["events"][0]["source"]  # a new customer, twice
    events = receive(line_account, first) + receive(line_account, second)

    line_events_process(event_pks=[e.pk for e in events])

    states = dict(LineWebhookEvent.objects.values_list("pk", "state"))
    assert states == {events[0].pk: EventState.PENDING, events[1].pk: EventState.PROCESSED}
    conversation = Conversation.objects.get()
    assert list(conversation.messages.values_list("external_id", flat=True)) == [
        second["events"][0]["message"]["id"]
    ]


def test_a_conversation_reopened_by_an_event_that_then_fails_is_reopened_again_by_the_next(
    line_account, monkeypatch
):
    """A waiting conversation goes back to open with the customer's message; when that event fails,
    its savepoint undoes the reopening, and the next event of the transaction must reopen it."""
    from channels_line.services import inbound, line_events_process

    monkeypatch.setattr(inbound, "EVENTS_PER_TRANSACTION", 8)  # one transaction
    first = process(line_account, "message_text__user", fresh=True)
    Conversation.objects.filter(pk=first.conversation_id).update(state=ConversationState.WAITING)
    handle = inbound.HANDLERS["message"]
    calls = []

    def fails_once_after_reopening(event, profile):
        calls.append(event.pk)
        message = handle(event, profile)
        if len(calls) == 1:
            raise OperationalError("passing failure")
        return message

    monkeypatch.setitem(inbound.HANDLERS, "message", fails_once_after_reopening)
    payloads = [load_payload("message_text__user", fresh=True) for _ in range(2)]
    for payload in payloads:
        payload["events"][0]["source"] = first.raw["source"]
    events = [e for payload in payloads for e in receive(line_account, payload)]

    line_events_process(event_pks=[e.pk for e in events])

    conversation = Conversation.objects.get()
    assert conversation.state == ConversationState.OPEN
    assert conversation.messages.count() == 2  # the first one's and the second event's


def test_one_task_with_events_of_two_accounts_keeps_each_in_its_own_conversation(
    line_account, line_credentials, monkeypatch
):
    from channels_line.services import inbound, line_account_create, line_events_process

    monkeypatch.setattr(inbound, "EVENTS_PER_TRANSACTION", 8)  # one transaction
    other = line_account_create(
        name="Other shop", **{**line_credentials, "channel_id": str(int(line_credentials["channel_id"]) + 1)}
    )
    same_user = load_payload("message_text__user", fresh=True)["events"][0]["source"]
    events = []
    for account in (line_account, other, line_account, other):
        payload = load_payload("message_text__user", fresh=True)
        payload["events"][0]["source"] = same_user  # the same LINE user ID on both accounts
        events += receive(account, payload)

    line_events_process(event_pks=[e.pk for e in events])

    assert LineWebhookEvent.objects.filter(state=EventState.PROCESSED).count() == 4
    for account in (line_account, other):
        conversation = Conversation.objects.get(messaging_account=account)
        assert conversation.messages.count() == 2
        assert SocialProfile.objects.filter(messaging_account=account).count() == 1


@pytest.mark.parametrize("per_transaction", [8, 1])
def test_the_last_activity_is_the_latest_message_processed_whatever_the_transactions(
    line_account, monkeypatch, per_transaction
):
    """The conversation's last activity moves once per transaction: to its latest message, never
    back, and not to the time of an event that failed."""
    from channels_line.services import inbound, line_events_process

    monkeypatch.setattr(inbound, "EVENTS_PER_TRANSACTION", per_transaction)
    handle = inbound.HANDLERS["message"]

    def fails_for_the_newest(event, profile):
        if event.webhook_event_id == newest["events"][0]["webhookEventId"]:
            raise OperationalError("passing failure")
        return handle(event, profile)

    monkeypatch.setitem(inbound.HANDLERS, "message", fails_for_the_newest)
    payloads = [load_payload("message_text__user", fresh=True) for _ in range(4)]
    start = payloads[0]["events"][0]["timestamp"]
    for offset, payload in zip([3000, 1000, 2000, 9000], payloads, strict=True):
        payload["events"][0]["source"] = payloads[0]["events"][0]["source"]
        payload["events"][0]["timestamp"] = start + offset
    newest = payloads[3]
    events = [e for payload in payloads for e in receive(line_account, payload)]

    line_events_process(event_pks=[e.pk for e in events])

    conversation = Conversation.objects.get()
    assert conversation.messages.count() == 3
    assert conversation.last_message_at == datetime.datetime.fromtimestamp(
        (start + 3000) / 1000, tz=datetime.UTC
    )


def test_a_transaction_takes_a_few_events_and_the_next_takes_the_rest(line_account, monkeypatch):
    from channels_line.services import inbound, line_events_process

    saved = []
    save = inbound._events_save_outcome
    monkeypatch.setattr(
        inbound, "_events_save_outcome", lambda events: (saved.append(len(events)), save(events))
    )
    events = [
        e for _ in range(10) for e in receive(line_account, load_payload("message_text__user", fresh=True))
    ]

    line_events_process(event_pks=[e.pk for e in events])

    per = inbound.EVENTS_PER_TRANSACTION
    assert saved == [per] * (10 // per) + ([10 % per] if 10 % per else [])  # one write per transaction
    assert LineWebhookEvent.objects.filter(state=EventState.PROCESSED).count() == 10
    assert Message.objects.count() == 10


def test_the_processing_task_queues_a_failed_event_again_twice_soon_then_leaves_it_to_the_sweep(
    line_account, monkeypatch
):
    from channels_line import tasks
    from channels_line.services import inbound

    def broken(event, profile):  # stands in for a passing failure (a deadlock, a restart)
        raise OperationalError("passing failure")

    monkeypatch.setitem(inbound.HANDLERS, "postback", broken)
    queued: list[tuple[list[int], int]] = []
    monkeypatch.setattr(
        tasks.line_events_process, "apply_async", lambda args, countdown: queued.append((args[0], countdown))
    )
    text = receive(line_account, load_payload("message_text__user", fresh=True))[0]
    postback = receive(line_account, load_payload("postback__plain", fresh=True))[0]

    tasks.line_events_process.run([text.pk, postback.pk])
    tasks.line_events_process.run([postback.pk])
    tasks.line_events_process.run([postback.pk])  # the third failure is left to the sweep

    assert queued == [([postback.pk], 5), ([postback.pk], 10)]
    postback.refresh_from_db()
    assert postback.attempts == 3 and postback.state == EventState.PENDING
    assert postback.enqueued_at is not None  # the sweep does not queue it a second time meanwhile


def test_a_batch_runs_a_fixed_number_of_queries_per_event(
    line_account, django_assert_max_num_queries, monkeypatch
):
    from channels_line.services import inbound, line_events_process

    process(line_account, "message_text__user", fresh=True)  # the profile and conversation exist now
    events = [
        e for _ in range(10) for e in receive(line_account, load_payload("message_text__user", fresh=True))
    ]
    # Per event: its message, in two savepoints (4 statements); per transaction: its events and
    # their open conversations (one query each), the conversation's last activity, the outcome, and
    # on PostgreSQL the customer's advisory lock.
    transactions = -(-10 // inbound.EVENTS_PER_TRANSACTION)
    with django_assert_max_num_queries(2 + 10 * 5 + transactions * 7):
        line_events_process(event_pks=[e.pk for e in events])
    assert Message.objects.count() == 11


def test_events_with_odd_content_are_processed_once_without_retries(line_account):
    null_text = load_payload("message_text__user", fresh=True)
    null_text["events"][0]["message"]["text"] = None
    long_id = load_payload("message_text__user", fresh=True)
    long_id["events"][0]["message"]["id"] = "9" * 150
    list_message = load_payload("message_text__user", fresh=True)
    list_message["events"][0]["message"] = ["not", "an", "object"]
    list_postback = load_payload("postback__plain", fresh=True)
    list_postback["events"][0]["postback"] = [1, 2]
    events = [e for p in (null_text, long_id, list_message, list_postback) for e in receive(line_account, p)]

    for event in events:
        line_event_process(event_pk=event.pk)

    stored = LineWebhookEvent.objects.filter(pk__in=[e.pk for e in events]).order_by("id")
    assert [(e.state, e.attempts) for e in stored] == [(EventState.PROCESSED, 1)] * 4
    texts = [e.message.text for e in stored]
    assert texts[0] == "" and texts[3] == ""
    assert stored[1].message.external_id == "9" * 100
    assert stored[2].message.kind == MessageKind.UNKNOWN and stored[2].message.is_flagged


def test_a_message_from_an_event_stored_altered_is_flagged_for_a_human(line_account):
    payload = load_payload("message_text__user", fresh=True)
    body = body_bytes(payload).replace(b'"text":"', b'"text":"\\u0000', 1)
    line_webhook_receive(
        account=line_account, body=body, signature=sign(body, line_account.line.channel_secret)
    )
    event = LineWebhookEvent.objects.get()
    assert event.raw_as_signed

    line_event_process(event_pk=event.pk)

    message = Message.objects.get()
    assert message.is_flagged and message.text.startswith("\ufffd")

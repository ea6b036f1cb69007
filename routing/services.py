"""Routing decisions and routing set-up writes.

One decision path: `routing_decide` classifies (ordered rule sets; in each the first matching rule
writes) and picks the queue (ordered route-to-queue rules; the first match whose queue is not
overflowing wins; no match: the fallback queue), applying the overflow-before-queueing actions. The
admin's "Test routing" and the routing of a real conversation (`conversation_route`) both call it.

A new conversation is recorded due for routing when it is created (`Conversation.routing_due_at`, in
the transaction that creates it); `conversation_routing_schedule` queues the routing task after the
commit, and `conversations_routing_sweep` queues again whatever is still due QUEUE_SWEEP_AFTER_SECONDS
later (a lost enqueue, a dead worker). Routing records its decision with a conditional UPDATE on
`routing_due_at`, so a conversation is never routed twice, however many tasks run for it."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Model, ProtectedError
from django.utils import timezone

from omnichannel import events
from omnichannel.models import Conversation, ConversationState, Direction, Message

from .conditions import (
    OpeningPeriod,
    RoutingFacts,
    WorkAttributes,
    conditions_match,
    queue_open_at,
    split_bucket,
    split_pick,
    time_facts,
)
from .distribution import queue_assign
from .models import (
    ChannelInstance,
    ClassificationRule,
    ClassificationRuleSet,
    DistributionMode,
    OverflowAction,
    Queue,
    QueueHoliday,
    QueueMembership,
    QueueOperatingHours,
    RouteToQueueRule,
    Workstream,
)
from .selectors import queue_open_items_count, routing_record_uses, workstream_with_rules

logger = logging.getLogger(__name__)


class Outcome:
    QUEUED = "queued"
    ENDED = "ended"
    UNROUTED = "unrouted"


@dataclass
class Overflow:
    """Why a queue overflowed before queueing, and what was done."""

    queue: Queue
    condition: str  # "out_of_hours" or "open_items"
    action: str  # an OverflowAction
    message: str = ""
    transfer_to: Queue | None = None
    open_items: int | None = None

    def as_record(self) -> dict[str, Any]:
        return {
            "queue": _queue_record(self.queue),
            "condition": self.condition,
            "action": self.action,
            "message": self.message,
            "transfer_to": _queue_record(self.transfer_to) if self.transfer_to else None,
            "open_items": self.open_items,
        }


@dataclass
class RoutingDecision:
    """What routing decided for one conversation (or one "Test routing" sample)."""

    workstream: Workstream | None
    queue: Queue | None
    outcome: str
    reason: str
    matched: list[dict[str, Any]] = field(default_factory=list)
    attributes: WorkAttributes = field(default_factory=WorkAttributes)
    overflow: Overflow | None = None
    error: str = ""
    assign_anyway: bool = False

    def as_record(self, *, at: datetime.datetime) -> dict[str, Any]:
        """The decision as stored on the conversation (Conversation.routing) and shown to supervisors."""
        return {
            "at": at.isoformat(),
            "workstream": {"id": self.workstream.pk, "name": self.workstream.name}
            if self.workstream
            else None,
            "queue": _queue_record(self.queue) if self.queue else None,
            "outcome": self.outcome,
            "reason": self.reason,
            "matched": self.matched,
            "attributes": self.attributes.as_record(),
            "overflow": self.overflow.as_record() if self.overflow else None,
            "assign_anyway": self.assign_anyway,
            "error": self.error,
        }


def _queue_record(queue: Queue) -> dict[str, Any]:
    return {"id": queue.pk, "name": queue.name}


class _Queues:
    """The queues one decision looks at, each loaded once; its hours and holidays only when an
    overflow rule asks whether it is open (most queues have no out-of-hours action)."""

    def __init__(self, *, at: datetime.datetime, known: tuple[Queue | None, ...] = ()) -> None:
        self.at = at
        self._queues: dict[int, Queue] = {queue.pk: queue for queue in known if queue is not None}
        self._open: dict[int, bool] = {}

    def get(self, queue_id: int) -> Queue:
        if queue_id not in self._queues:
            self._queues[queue_id] = Queue.objects.get(pk=queue_id)
        return self._queues[queue_id]

    def is_open(self, queue: Queue) -> bool:
        if queue.pk not in self._open:
            self._open[queue.pk] = queue_open_at(
                at=self.at,
                timezone_name=queue.timezone,
                periods=[OpeningPeriod(p.weekday, p.start, p.end) for p in queue.operating_hours.all()],
                holidays=[h.date for h in queue.holidays.all()],
            )
        return self._open[queue.pk]

    def overflow(self, queue: Queue) -> Overflow | None:
        """Overflow before queueing: out of hours first (when the queue has an action for it), then
        full (`open_items_limit` open items already)."""
        if queue.out_of_hours_action and not self.is_open(queue):
            return self._overflow(queue, "out_of_hours")
        if queue.open_items_limit is not None:
            count = queue_open_items_count(queue_id=queue.pk)
            if count >= queue.open_items_limit:
                overflow = self._overflow(queue, "open_items")
                overflow.open_items = count
                return overflow
        return None

    def _overflow(self, queue: Queue, condition: str) -> Overflow:
        action = getattr(queue, f"{condition}_action")
        target_id = getattr(queue, f"{condition}_transfer_queue_id")
        return Overflow(
            queue=queue,
            condition=condition,
            action=action,
            message=getattr(queue, f"{condition}_message") if action == OverflowAction.END else "",
            transfer_to=self.get(target_id) if action == OverflowAction.TRANSFER and target_id else None,
        )


_CONDITION_WORDS = {"out_of_hours": "is out of its operating hours", "open_items": "is full"}


def _overflow_applied(decision: RoutingDecision, overflow: Overflow, why: str) -> RoutingDecision:
    """Apply an overflow action to a decision. A transfer is followed once: the target queue's own
    overflow is not applied again (two queues transferring to each other cannot loop)."""
    decision.overflow = overflow
    state = _CONDITION_WORDS[overflow.condition]
    if overflow.condition == "open_items":
        state += f" ({overflow.open_items} open items, limit {overflow.queue.open_items_limit})"
    if overflow.action == OverflowAction.END:
        decision.queue = overflow.queue
        decision.outcome = Outcome.ENDED
        decision.reason = f"{why}; queue '{overflow.queue}' {state}: the conversation ends with a message."
    elif overflow.action == OverflowAction.TRANSFER:
        decision.queue = overflow.transfer_to
        decision.reason = (
            f"{why}; queue '{overflow.queue}' {state}: transferred to queue '{overflow.transfer_to}'."
        )
    else:
        decision.queue = overflow.queue
        decision.assign_anyway = True
        decision.reason = f"{why}; queue '{overflow.queue}' {state}: assigned anyway."
    return decision


def routing_decide(
    *, workstream: Workstream, facts: RoutingFacts, at: datetime.datetime, split_key: int | str
) -> RoutingDecision:
    """Classify and pick the queue for these facts (routing/conditions.py lists the fields), as of
    `at`. `split_key` picks the share of a percentage split (the conversation's ID). A rule that
    cannot be evaluated, or any other error of classification, sends the work to the fallback queue
    with the error as the reason. Database errors propagate (the caller retries)."""
    workstream = workstream_with_rules(workstream_id=workstream.pk)
    facts = {**facts, **time_facts(at=at, timezone_name=workstream.timezone)}
    decision = RoutingDecision(workstream=workstream, queue=None, outcome=Outcome.QUEUED, reason="")
    queues = _Queues(at=at, known=(workstream.fallback_queue,))
    step = "classification"
    try:
        for rule_set in workstream.classification_rule_sets.all():
            for rule in rule_set.rules.all():
                step = f"classification rule '{rule.name}' of set '{rule_set.name}'"
                if conditions_match(rule.conditions, facts):
                    decision.attributes.apply(rule.set)
                    facts.update(_attribute_facts(rule.set, decision.attributes))
                    decision.matched.append(
                        {
                            "kind": "classification",
                            "id": rule.pk,
                            "name": rule.name,
                            "rule_set": rule_set.name,
                        }
                    )
                    break
        first_overflow: Overflow | None = None
        first_rule_name = ""
        for route in workstream.route_to_queue_rules.all():
            step = f"route-to-queue rule '{route.name}'"
            if not conditions_match(route.conditions, facts):
                continue
            queue_id = route.queue_id
            if route.split:
                queue_id = split_pick(route.split, bucket=split_bucket(rule_id=route.pk, key=split_key))
            queue = queues.get(queue_id)
            overflow = queues.overflow(queue)
            decision.matched.append(
                {
                    "kind": "route",
                    "id": route.pk,
                    "name": route.name,
                    "queue": queue.name,
                    "overflowing": bool(overflow),
                }
            )
            if overflow is None:
                decision.queue = queue
                decision.reason = f"Route-to-queue rule '{route.name}' matched: queue '{queue}'."
                return decision
            if first_overflow is None:
                first_overflow, first_rule_name = overflow, route.name
    except DatabaseError:
        raise
    except Exception as error:
        logger.warning("Routing failed at %s workstream=%s: %s", step, workstream.pk, error, exc_info=True)
        decision.error = f"{step}: {error}"
        decision.queue = workstream.fallback_queue
        decision.reason = f"Classification failed ({step}: {error}): sent to the fallback queue."
        return decision
    if first_overflow is not None:
        return _overflow_applied(
            decision,
            first_overflow,
            f"Route-to-queue rule '{first_rule_name}' matched but every matching queue overflows",
        )
    fallback = queues.get(workstream.fallback_queue_id)
    decision.queue = fallback
    why = "No route-to-queue rule matched: the fallback queue"
    overflow = queues.overflow(fallback)
    if overflow is not None:
        return _overflow_applied(decision, overflow, why)
    decision.reason = f"{why} '{fallback}'."
    return decision


def _attribute_facts(output: dict[str, Any], attributes: WorkAttributes) -> RoutingFacts:
    """What later rule sets read of what a rule wrote."""
    facts: RoutingFacts = {}
    if "priority" in output:
        facts["work.priority"] = attributes.priority
    if "capacity" in output:
        facts["work.capacity"] = attributes.capacity
    if "skills" in output:
        facts["work.skills"] = sorted(attributes.skills or {})
    for name, value in (output.get("context") or {}).items():
        facts[f"context.{name}"] = value
    return facts


# --- Facts --------------------------------------------------------------------------------------


def routing_facts_sample(
    *,
    display_name: str = "",
    language: str = "",
    text: str = "",
    channel_instance: str = "",
    contact: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> RoutingFacts:
    """Facts from sample values ("Test routing"); the same keys as `routing_facts_for_conversation`."""
    facts: RoutingFacts = {
        "customer.display_name": display_name,
        "customer.language": language,
        "message.text": text,
        "channel_instance": channel_instance,
    }
    facts.update({f"contact.{key}": value for key, value in (contact or {}).items()})
    facts.update({f"context.{key}": value for key, value in (context or {}).items()})
    return facts


def routing_facts_for_conversation(*, conversation: Conversation) -> RoutingFacts:
    """The facts routing conditions read about a conversation (its messaging account, social profile
    and contact loaded): its customer's social profile and linked contact, its first inbound
    message's text, its channel instance (named by its messaging account)."""
    profile = conversation.social_profile
    first_text = (
        Message.objects.filter(conversation=conversation, direction=Direction.INBOUND)
        .order_by("sent_at", "id")
        .values_list("text", flat=True)
        .first()
    )
    contact: dict[str, Any] = {}
    if profile is not None and profile.contact is not None:
        record = profile.contact
        contact = {**(record.custom_fields or {}), "name": record.name, "email": record.email}
        contact.update({"phone": record.phone, "notes": record.notes})
    return routing_facts_sample(
        display_name=profile.display_name if profile else "",
        language=profile.language if profile else "",
        text=first_text or "",
        channel_instance=conversation.messaging_account.name,
        contact=contact,
    )


# --- Routing a conversation ---------------------------------------------------------------------


def conversation_routing_schedule(*, conversation: Conversation) -> None:
    """Queue the routing of a new conversation (called after the commit that created it, due for
    routing; conversation_route records why one whose account is in no channel instance stays
    unrouted). A lost enqueue is logged, not raised: the sweep queues it again."""
    from .tasks import conversation_route as conversation_route_task

    try:
        conversation_route_task.delay(conversation.pk)
    except Exception:
        logger.exception("Routing not queued (the sweep will) conversation=%s", conversation.pk)


def _routing_skip(*, conversation_id: int, reason: str) -> bool:
    """Record that a conversation due for routing is not routed, and why; it is due no more."""
    now = timezone.now()
    record = {
        "at": now.isoformat(),
        "queue": None,
        "outcome": Outcome.UNROUTED,
        "reason": reason,
        "matched": [],
    }
    skipped = bool(
        Conversation.objects.filter(pk=conversation_id, routing_due_at__isnull=False).update(
            routing_due_at=None, routing=record
        )
    )
    if skipped:
        logger.info("Conversation not routed conversation=%s: %s", conversation_id, reason)
    return skipped


def conversation_route(*, conversation_id: int) -> RoutingDecision | None:
    """Classify and route a conversation due for routing, and record the decision on it (workstream,
    queue, priority, routing, queued_at; due no more) in one short transaction whose conditional
    UPDATE lets only one run win. An overflow that ends the conversation sends the queue's message and
    closes it in that transaction. Once committed, a conversation queued for a push workstream is
    given out at once (`_routed_assign`). Returns the decision recorded, or None when there was
    nothing to do (routed already, gone, or not routable: the reason is recorded)."""
    conversation = (
        Conversation.objects.select_related("messaging_account", "social_profile__contact")
        .filter(pk=conversation_id)
        .first()
    )
    if conversation is None or conversation.routing_due_at is None:
        logger.info("Nothing to route conversation=%s (routed already or deleted)", conversation_id)
        return None
    if conversation.state != ConversationState.OPEN:
        _routing_skip(
            conversation_id=conversation_id,
            # The state's value, not its label: the record is stored, whatever language routing ran in.
            reason=f"Its state was '{conversation.state}' before routing.",
        )
        return None
    workstream_id = (
        ChannelInstance.objects.filter(messaging_account_id=conversation.messaging_account_id)
        .values_list("workstream_id", flat=True)
        .first()
    )
    if workstream_id is None:
        _routing_skip(
            conversation_id=conversation_id, reason="Its messaging account is in no channel instance."
        )
        return None
    try:
        facts = routing_facts_for_conversation(conversation=conversation)
        # routing_decide reads the workstream with its rules (once: nothing else reads it here).
        decision = routing_decide(
            workstream=Workstream(pk=workstream_id),
            facts=facts,
            at=conversation.created_at,
            split_key=conversation.pk,
        )
    except DatabaseError:
        raise
    except Exception as error:
        # routing_decide sends its own errors to the fallback queue; this is for anything around it.
        logger.exception("Routing failed conversation=%s: sent to the fallback queue", conversation_id)
        fallback = Workstream.objects.select_related("fallback_queue").get(pk=workstream_id)
        decision = RoutingDecision(
            workstream=fallback,
            queue=fallback.fallback_queue,
            outcome=Outcome.QUEUED,
            reason=f"Routing failed ({error}): sent to the fallback queue.",
            error=str(error),
        )
    workstream = decision.workstream
    assert workstream is not None
    now = timezone.now()
    values: dict[str, Any] = {
        "workstream": workstream,
        "queue": decision.queue,
        "routing": decision.as_record(at=now),
        "routing_due_at": None,
        "queued_at": now if decision.outcome == Outcome.QUEUED else None,
    }
    if decision.attributes.priority is not None:
        values["priority"] = decision.attributes.priority
    with transaction.atomic():
        won = Conversation.objects.filter(
            pk=conversation_id, routing_due_at__isnull=False, state=ConversationState.OPEN
        ).update(**values)
        if not won:
            logger.info("Routing lost a race conversation=%s: routed by another run", conversation_id)
            return None
        if decision.outcome == Outcome.ENDED:
            _overflow_end(conversation=conversation, decision=decision)
        elif decision.queue is not None:
            # Waiting for an agent now (or for agents of a pick queue to take it). `routed`: nobody
            # needs to queue its assignment, it follows here.
            events.emit(
                events.CONVERSATION_QUEUED,
                conversation_id=conversation_id,
                queue_id=decision.queue.pk,
                routed=True,
            )
    logger.info(
        "Conversation routed conversation=%s workstream=%s queue=%s outcome=%s",
        conversation_id,
        workstream.pk,
        decision.queue.pk if decision.queue else None,
        decision.outcome,
    )
    if (
        decision.outcome == Outcome.QUEUED
        and decision.queue is not None
        and workstream.distribution_mode == DistributionMode.PUSH
    ):
        _routed_assign(queue_id=decision.queue.pk, conversation_id=conversation_id)
    return decision


def _routed_assign(*, queue_id: int, conversation_id: int) -> None:
    """Give a conversation just routed out in the same task (one task per new conversation, not a
    second one for its queue): the queue's assignment up to this item, so that items waiting ahead of
    it still go first. A failure is logged: the item waits, and the assignment sweep gives it out."""
    try:
        queue_assign(queue_id=queue_id, until=conversation_id)
    except Exception:
        logger.exception(
            "Assignment after routing failed (the assignment sweep will) conversation=%s queue=%s",
            conversation_id,
            queue_id,
        )


def _overflow_end(*, conversation: Conversation, decision: RoutingDecision) -> None:
    """End a conversation whose queue overflowed with "end with a message": the queue's message is
    queued for delivery (the existing outbound path), then the conversation is closed."""
    from omnichannel.services import conversation_close, message_send

    assert decision.overflow is not None
    if decision.overflow.message:
        try:
            message_send(conversation=conversation, author=None, text=decision.overflow.message)
        except ValidationError as error:
            logger.warning("Overflow message not sent conversation=%s: %s", conversation.pk, error.messages)
    conversation_close(conversation=conversation)


def conversations_routing_sweep(*, now: datetime.datetime | None = None) -> int:
    """Queue again the routing of conversations still due QUEUE_SWEEP_AFTER_SECONDS after they were
    due (their enqueue or their worker was lost). Each is due again from now, so the next sweep waits
    as long again. Returns how many were found."""
    from .tasks import conversation_route as conversation_route_task

    now = now or timezone.now()
    overdue = list(
        Conversation.objects.filter(
            routing_due_at__lte=now - datetime.timedelta(seconds=settings.QUEUE_SWEEP_AFTER_SECONDS)
        )
        .order_by("routing_due_at", "pk")
        .values_list("pk", flat=True)
    )
    if not overdue:
        return 0
    Conversation.objects.filter(pk__in=overdue, routing_due_at__isnull=False).update(routing_due_at=now)
    for conversation_id in overdue:
        try:
            conversation_route_task.delay(conversation_id)
        except Exception:
            logger.exception("Routing not queued (the next sweep will) conversation=%s", conversation_id)
            break
    return len(overdue)


# --- Set-up writes (the admin's forms and, next, the API call these) ------------------------------


@transaction.atomic
def workstream_save(*, workstream: Workstream) -> Workstream:
    """Create or change a workstream once valid. The distribution mode is fixed at creation: a change
    is refused (checked against the row, locked, not against what a form last read)."""
    if workstream.pk is not None:
        stored = (
            Workstream.objects.select_for_update()
            .filter(pk=workstream.pk)
            .values_list("distribution_mode", flat=True)
        )
        mode = stored.first()
        if mode is not None and mode != workstream.distribution_mode:
            raise ValidationError(
                {
                    "distribution_mode": "The distribution mode is fixed when the workstream is created: "
                    "create another workstream for the other mode."
                }
            )
    workstream.full_clean()
    workstream.save()
    return workstream


@transaction.atomic
def routing_record_save(*, record: Any) -> Any:
    """Save a queue, membership, opening period, holiday, rule set or rule once valid (its clean()
    names the field at fault: "conditions[1].field: unknown field 'customer.nme'"). A new queue
    membership is announced (QUEUE_MEMBER_ADDED: assignment runs for that queue)."""
    record.full_clean()
    is_new_member = isinstance(record, QueueMembership) and record._state.adding
    record.save()
    if is_new_member:
        events.emit(events.QUEUE_MEMBER_ADDED, queue_id=record.queue_id, agent_id=record.user_id)
    return record


def channel_instance_save(*, instance: ChannelInstance) -> ChannelInstance:
    """Attach a messaging account to a workstream (or change the instance). An account already in
    another channel instance is refused with a clear message, also when two saves race (the
    one-to-one's unique constraint decides)."""
    instance.full_clean()
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as error:
        if (
            ChannelInstance.objects.filter(messaging_account_id=instance.messaging_account_id)
            .exclude(pk=instance.pk)
            .exists()
        ):
            raise ValidationError(
                {
                    "messaging_account": ChannelInstance._meta.get_field("messaging_account").error_messages[
                        "unique"
                    ]
                }
            ) from error
        raise
    return instance


class RecordInUse(Exception):
    """A queue or workstream that something still uses: the message says what."""

    @classmethod
    def naming(cls, *, record: Model, uses: list[str]) -> RecordInUse:
        shown = sorted(uses)[:10]
        more = f" and {len(uses) - len(shown)} more" if len(uses) > len(shown) else ""
        kind = record._meta.verbose_name
        return cls(
            f"The {kind} '{record}' is in use: {'; '.join(shown)}{more}. Change or delete those first."
        )


def _nested_errors(error: ValidationError, *, where: str) -> list[str]:
    """A nested record's errors as messages naming their place: "rules[1].conditions[0].field: ..."."""
    messages = []
    for name, field_messages in error.message_dict.items():
        for message in field_messages:
            if name == NON_FIELD_ERRORS:
                messages.append(f"{where}: {message}")
            elif message.startswith((f"{name}[", f"{name}.", f"{name}:")):
                messages.append(f"{where}.{message}")
            else:
                messages.append(f"{where}.{name}: {message}")
    return messages


def _nested_save(records: list[Model], *, name: str) -> None:
    """Save each record through routing_record_save; every record's errors, by place, in one
    ValidationError on `name` (nothing is kept: the caller's transaction rolls back)."""
    errors: list[str] = []
    for index, record in enumerate(records):
        try:
            routing_record_save(record=record)
        except ValidationError as error:
            errors += _nested_errors(error, where=f"{name}[{index}]")
    if errors:
        raise ValidationError({name: errors})


@transaction.atomic
def queue_save(
    *,
    queue: Queue,
    members: list[int] | None = None,
    operating_hours: list[dict[str, Any]] | None = None,
    holidays: list[dict[str, Any]] | None = None,
) -> Queue:
    """Create or change a queue and, for each of `members` (user IDs), `operating_hours` ({weekday,
    start, end}) and `holidays` ({date, name}) that is given, replace that part as a whole, in one
    transaction (None: unchanged). A member who stays keeps their row (and its round-robin place);
    each member added is announced (QUEUE_MEMBER_ADDED: assignment reruns) after the commit. Two
    writes of one queue take turns (its row is locked), so their replacements cannot interleave."""
    if queue.pk is not None:
        list(Queue.objects.select_for_update().filter(pk=queue.pk).values_list("pk", flat=True))
    routing_record_save(record=queue)
    if members is not None:
        current = set(QueueMembership.objects.filter(queue=queue).values_list("user_id", flat=True))
        QueueMembership.objects.filter(queue=queue, user_id__in=current - set(members)).delete()
        added = [user_id for user_id in members if user_id not in current]
        # routing_record_save announces each new member (QUEUE_MEMBER_ADDED).
        _nested_save([QueueMembership(queue=queue, user_id=user_id) for user_id in added], name="members")
    if operating_hours is not None:
        QueueOperatingHours.objects.filter(queue=queue).delete()
        _nested_save(
            [QueueOperatingHours(queue=queue, **period) for period in operating_hours], name="operating_hours"
        )
    if holidays is not None:
        QueueHoliday.objects.filter(queue=queue).delete()
        _nested_save([QueueHoliday(queue=queue, **holiday) for holiday in holidays], name="holidays")
    return queue


@transaction.atomic
def classification_rule_set_save(
    *, rule_set: ClassificationRuleSet, rules: list[dict[str, Any]] | None = None
) -> ClassificationRuleSet:
    """Create or change a work classification rule set and, when `rules` is given, make its rules
    exactly these ({id?, name, order?, conditions, set}), in one transaction. A rule given with its
    `id` is changed in place (its ID stays in recorded routing decisions), one without is created,
    the set's other rules are deleted. A rule without `order` takes its place in the list. Two
    writes of one rule set take turns (its row is locked)."""
    if rule_set.pk is not None:
        list(
            ClassificationRuleSet.objects.select_for_update()
            .filter(pk=rule_set.pk)
            .values_list("pk", flat=True)
        )
    routing_record_save(record=rule_set)
    if rules is None:
        return rule_set
    existing = {rule.pk: rule for rule in ClassificationRule.objects.filter(rule_set=rule_set)}
    unknown = [
        f"rules[{index}].id: no rule {item['id']} in this rule set."
        for index, item in enumerate(rules)
        if "id" in item and item["id"] not in existing
    ]
    if unknown:
        raise ValidationError({"rules": unknown})
    kept = {item["id"] for item in rules if "id" in item}
    ClassificationRule.objects.filter(rule_set=rule_set).exclude(pk__in=kept).delete()
    records = []
    for index, item in enumerate(rules):
        rule = existing[item["id"]] if "id" in item else ClassificationRule(rule_set=rule_set)
        rule.name = item["name"]
        rule.order = item.get("order", index)
        rule.conditions = item.get("conditions", [])
        rule.set = item["set"]
        records.append(rule)
    _nested_save(records, name="rules")
    return rule_set


def _use_described(record: Model) -> str:
    if isinstance(record, Workstream):
        return f"workstream '{record}' (its fallback queue)"
    if isinstance(record, RouteToQueueRule):
        return f"route-to-queue rule '{record}' of workstream '{record.workstream}'"
    if isinstance(record, Queue):
        return f"queue '{record}' (its overflow transfers there)"
    if isinstance(record, ChannelInstance):
        return f"channel instance '{record}'"
    return f"{record._meta.verbose_name} '{record}'"


@transaction.atomic
def routing_record_delete(*, record: Model) -> None:
    """Delete a queue, workstream, rule set, rule or channel instance. Refused (RecordInUse, saying
    what uses it) for a queue that a workstream, a route-to-queue rule (its queue or a percentage
    split) or another queue's overflow points at, or that holds open conversations (they would be
    left in no queue), and for a workstream that channel instances use."""
    uses = routing_record_uses(record=record)
    if not uses:
        try:
            with transaction.atomic():
                record.delete()
        except ProtectedError as error:
            uses = [_use_described(used_by) for used_by in error.protected_objects]
    if uses:
        raise RecordInUse.naming(record=record, uses=uses)
    logger.info("Routing set-up deleted %s=%s", record._meta.model_name, record.pk)

"""The routing rules engine's pure part: conditions over a conversation's facts, what classification
writes, percentage splits and operating hours. No database here: routing/services.py loads the
records and builds the facts; "Test routing" and real routing share every function.

A condition is data: {"field": ..., "operator": ..., "value": ...}. A rule's conditions must all hold
(an empty list always holds).

Fields (`RoutingFacts`):
- `customer.display_name`, `customer.language`: the customer's social profile.
- `message.text`: the text of the conversation's first inbound message.
- `channel_instance`: the channel instance's name, which is its messaging account's name.
- `contact.<field>`: the linked contact's `name`, `email`, `phone`, `notes` or a custom field.
- `context.<name>`: a context variable (given to the conversation, or written by an earlier rule set).
- `work.priority`, `work.capacity`, `work.skills`: what earlier classification rule sets wrote.
- `time.weekday` (0 = Monday ... 6 = Sunday), `time.hour` (0-23): when the conversation arrived, in
  the workstream's time zone.

Operators, and what a missing field does (missing = absent, null, "" or an empty list):
- `equals` / `not_equals`: the same value. Text is compared without regard to case ("Invoice" equals
  "invoice"); numbers by value (time.hour 9 equals 9 and "9"). A list field (work.skills) equals when
  one of its items does. Missing: `equals` is false, `not_equals` true.
- `contains` / `not_contains`: the value is part of the text (without regard to case); for a list
  field, one of its items equals the value. Missing: `contains` false, `not_contains` true.
- `starts_with`: the text starts with the value (without regard to case). Missing: false.
- `regex`: Python regular expression searched anywhere in the text, case-sensitive as written (use
  `(?i)` for the other). Checked at save; at most 500 characters; the text searched is cut at 10,000.
  Missing: false.
- `in`: the value is a list; the field equals one of its items (as `equals` compares). Missing: false.
- `exists`: value true (the default) or false: whether the field is present and not empty.
The value of every operator but `in` and `exists` is text, a number or true/false."""

from __future__ import annotations

import datetime
import hashlib
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

FIXED_FIELDS = frozenset(
    {
        "customer.display_name",
        "customer.language",
        "message.text",
        "channel_instance",
        "work.priority",
        "work.capacity",
        "work.skills",
        "time.weekday",
        "time.hour",
    }
)
PREFIXED_FIELDS = ("contact.", "context.")
OPERATORS = ("equals", "not_equals", "contains", "not_contains", "starts_with", "regex", "in", "exists")
REGEX_MAX_LENGTH = 500
REGEX_TEXT_MAX = 10_000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")
OUTPUT_KEYS = ("priority", "capacity", "skills", "context")

Scalar = str | int | float | bool
RoutingFacts = dict[str, Any]


class RuleError(Exception):
    """A rule that cannot be evaluated (stored before validation existed, or edited in the database)."""


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def field_known(field: object) -> bool:
    if not isinstance(field, str):
        return False
    if field in FIXED_FIELDS:
        return True
    return any(field.startswith(prefix) and _NAME.match(field[len(prefix) :]) for prefix in PREFIXED_FIELDS)


def condition_errors(condition: object, index: int) -> list[str]:
    """What is wrong with one condition, each message naming the place: "conditions[1].field: ..."."""
    where = f"conditions[{index}]"
    if not isinstance(condition, dict):
        return [f"{where}: a condition is an object with field, operator and value."]
    errors = []
    if extra := sorted(set(condition) - {"field", "operator", "value"}):
        errors.append(f"{where}: unknown key(s) {', '.join(map(repr, extra))}.")
    field = condition.get("field")
    if not field_known(field):
        errors.append(f"{where}.field: unknown field {field!r}.")
    operator = condition.get("operator")
    if operator not in OPERATORS:
        errors.append(f"{where}.operator: unknown operator {operator!r} (one of {', '.join(OPERATORS)}).")
        return errors
    value = condition.get("value")
    if operator == "exists":
        if "value" in condition and not isinstance(value, bool):
            errors.append(f"{where}.value: exists takes true or false.")
    elif operator == "in":
        if not isinstance(value, list) or not value or not all(_scalar(item) for item in value):
            errors.append(f"{where}.value: in takes a non-empty list of texts or numbers.")
    elif "value" not in condition or not _scalar(value):
        errors.append(f"{where}.value: {operator} takes a text, a number or true/false.")
    elif operator == "regex":
        if not isinstance(value, str):
            errors.append(f"{where}.value: regex takes a text.")
        elif len(value) > REGEX_MAX_LENGTH:
            errors.append(
                f"{where}.value: the regular expression is longer than {REGEX_MAX_LENGTH} characters."
            )
        else:
            try:
                re.compile(value)
            except re.error as error:
                errors.append(f"{where}.value: bad regular expression {value!r}: {error}.")
    return errors


def conditions_validate(conditions: object) -> list[dict[str, Any]]:
    """The conditions as stored, once every one is valid; else a ValidationError listing each problem."""
    if conditions in (None, ""):
        return []
    if not isinstance(conditions, list):
        raise ValidationError("conditions: a list of {field, operator, value} objects.")
    errors = [
        message
        for index, condition in enumerate(conditions)
        for message in condition_errors(condition, index)
    ]
    if errors:
        raise ValidationError(errors)
    return conditions


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).casefold()


def _missing(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set | frozenset) else [value]


def condition_matches(condition: Mapping[str, Any], facts: Mapping[str, Any]) -> bool:
    """Whether one condition holds for these facts (see the module's docstring for each operator)."""
    field = condition.get("field")
    operator = condition.get("operator")
    value = condition.get("value")
    if not field_known(field) or operator not in OPERATORS:
        raise RuleError(f"unknown field {field!r} or operator {operator!r}")
    actual = facts.get(field)
    if operator == "exists":
        expected = True if value is None else value
        if not isinstance(expected, bool):
            raise RuleError(f"exists takes true or false, not {value!r}")
        return (not _missing(actual)) is expected
    if operator == "in":
        if not isinstance(value, list):
            raise RuleError(f"in takes a list, not {value!r}")
        wanted = {_text(item) for item in value}
        return not _missing(actual) and any(_text(item) in wanted for item in _items(actual))
    if not _scalar(value):
        raise RuleError(f"{operator} takes a text, a number or true/false, not {value!r}")
    if operator == "not_equals":
        return not condition_matches({**condition, "operator": "equals"}, facts)
    if operator == "not_contains":
        return not condition_matches({**condition, "operator": "contains"}, facts)
    if _missing(actual):
        return False
    items = _items(actual)
    needle = _text(value)
    if operator == "equals":
        return any(_text(item) == needle for item in items)
    if operator == "contains":
        if isinstance(actual, list | tuple | set | frozenset):
            return any(_text(item) == needle for item in items)
        return needle in _text(actual)
    if operator == "starts_with":
        return any(_text(item).startswith(needle) for item in items)
    # regex
    try:
        pattern = re.compile(str(value))
    except re.error as error:
        raise RuleError(f"bad regular expression {value!r}: {error}") from error
    return any(pattern.search(str(item)[:REGEX_TEXT_MAX]) is not None for item in items)


def conditions_match(conditions: Iterable[Mapping[str, Any]] | None, facts: Mapping[str, Any]) -> bool:
    """Whether every condition holds (an empty list always does)."""
    if conditions is not None and not isinstance(conditions, list):
        raise RuleError("conditions are not a list")
    return all(condition_matches(condition, facts) for condition in conditions or [])


# --- What classification writes -----------------------------------------------------------------


@dataclass
class WorkAttributes:
    """What classification wrote about a conversation; read by later rule sets (`work.*`,
    `context.*`) and by distribution (priority, capacity, skills)."""

    priority: int | None = None
    capacity: int | None = None
    skills: dict[str, int] | None = None
    context: dict[str, Any] | None = None

    def apply(self, output: Mapping[str, Any]) -> None:
        """Write a rule's `set`: priority and capacity replace, skills and context merge (a later
        set's value for one skill or variable replaces an earlier one)."""
        if "priority" in output:
            self.priority = int(output["priority"])
        if "capacity" in output:
            self.capacity = int(output["capacity"])
        if "skills" in output:
            self.skills = {**(self.skills or {}), **skills_normalize(output["skills"])}
        if "context" in output:
            self.context = {**(self.context or {}), **dict(output["context"])}

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for key in OUTPUT_KEYS:
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        return record


def skills_normalize(skills: Any) -> dict[str, int]:
    """Skills as {name: minimum level}: a list of names means level 1."""
    if isinstance(skills, list):
        return {str(name): 1 for name in skills}
    if isinstance(skills, dict):
        return {str(name): int(level) for name, level in skills.items()}
    raise RuleError(f"skills are a list of names or an object of name: level, not {skills!r}")


def classification_output_validate(output: object) -> dict[str, Any]:
    """A classification rule's `set`, once valid; else a ValidationError naming each bad key."""
    if not isinstance(output, dict) or not output:
        raise ValidationError(f"set: an object with one or more of {', '.join(OUTPUT_KEYS)}.")
    errors = []
    for key in sorted(set(output) - set(OUTPUT_KEYS)):
        errors.append(f"set.{key}: unknown attribute (one of {', '.join(OUTPUT_KEYS)}).")
    for key in ("priority", "capacity"):
        if key in output:
            value = output[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < 0
                or (key == "capacity" and value == 0)
            ):
                errors.append(
                    f"set.{key}: a whole number{' above 0' if key == 'capacity' else ', 0 or more'}."
                )
    if "skills" in output:
        skills = output["skills"]
        if isinstance(skills, list):
            if not all(isinstance(name, str) and name.strip() for name in skills):
                errors.append("set.skills: skill names are texts.")
        elif isinstance(skills, dict):
            for name, level in skills.items():
                if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 10:
                    errors.append(f"set.skills.{name}: a level from 1 to 10.")
        else:
            errors.append("set.skills: a list of skill names, or an object of skill name: level (1-10).")
    if "context" in output:
        context = output["context"]
        if not isinstance(context, dict):
            errors.append("set.context: an object of variable name: value.")
        else:
            for name, value in context.items():
                if not _NAME.match(name):
                    errors.append(f"set.context.{name}: a variable name is letters, digits, _ and -.")
                elif not (_scalar(value) or value is None):
                    errors.append(f"set.context.{name}: a text, a number, true/false or null.")
    if errors:
        raise ValidationError(errors)
    return output


# --- Percentage split ---------------------------------------------------------------------------


def split_validate(split: object) -> list[dict[str, int]]:
    """A route-to-queue rule's split: [] or [{"queue": <id>, "percent": <1-100>}, ...] summing to 100,
    each queue once."""
    if split in (None, ""):
        return []
    if not isinstance(split, list):
        raise ValidationError('split: a list of {"queue": <id>, "percent": <number>}.')
    errors = []
    seen: set[int] = set()
    for index, part in enumerate(split):
        where = f"split[{index}]"
        if not isinstance(part, dict) or set(part) != {"queue", "percent"}:
            errors.append(f'{where}: an object {{"queue": <id>, "percent": <number>}}.')
            continue
        queue, percent = part["queue"], part["percent"]
        if isinstance(queue, bool) or not isinstance(queue, int):
            errors.append(f"{where}.queue: a queue ID.")
        elif queue in seen:
            errors.append(f"{where}.queue: queue {queue} is in the split twice.")
        else:
            seen.add(queue)
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
            errors.append(f"{where}.percent: a whole number from 1 to 100.")
    if not errors and split and sum(part["percent"] for part in split) != 100:
        errors.append(f"split: the percentages add up to {sum(part['percent'] for part in split)}, not 100.")
    if errors:
        raise ValidationError(errors)
    return split


def split_bucket(*, rule_id: int, key: int | str) -> int:
    """A number from 0 to 99 for one conversation (its ID is the key) and one rule: the same
    conversation always gets the same share, and the shares of many conversations follow the
    percentages (a hash, not a random draw, so a rerun of routing decides alike)."""
    digest = hashlib.sha256(f"{rule_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def split_pick(split: Sequence[Mapping[str, int]], *, bucket: int) -> int:
    """The queue ID of the share `bucket` (0-99) falls in: shares are laid end to end in their order."""
    upper = 0
    for part in split:
        upper += int(part["percent"])
        if bucket < upper:
            return int(part["queue"])
    raise RuleError("the split's percentages do not add up to 100")


# --- Operating hours ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OpeningPeriod:
    weekday: int  # 0 = Monday
    start: datetime.time
    end: datetime.time


def queue_open_at(
    *,
    at: datetime.datetime,
    timezone_name: str,
    periods: Sequence[OpeningPeriod],
    holidays: Iterable[datetime.date],
) -> bool:
    """Whether a queue is open at `at` (an aware datetime): the date and time in the queue's time
    zone, not on a holiday, within one of the weekly periods (start included, end excluded); no
    periods at all: open all day."""
    local = at.astimezone(zoneinfo.ZoneInfo(timezone_name))
    if local.date() in set(holidays):
        return False
    if not periods:
        return True
    now = local.time().replace(tzinfo=None)
    return any(p.weekday == local.weekday() and p.start <= now < p.end for p in periods)


def time_facts(*, at: datetime.datetime, timezone_name: str) -> dict[str, int]:
    local = at.astimezone(zoneinfo.ZoneInfo(timezone_name))
    return {"time.weekday": local.weekday(), "time.hour": local.hour}

"""The rules engine's conditions: every operator, missing fields, types, case, and the validation
that refuses a bad condition at save with the place named. Pure functions: no database."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest
from django.core.exceptions import ValidationError

from routing.conditions import (
    OpeningPeriod,
    RuleError,
    classification_output_validate,
    condition_matches,
    conditions_match,
    conditions_validate,
    queue_open_at,
    split_bucket,
    split_pick,
    split_validate,
    time_facts,
)

FACTS = {
    "customer.display_name": "Aiko Tanaka",
    "customer.language": "ja",
    "message.text": "Where is my INVOICE for order #1042?",
    "channel_instance": "Sakura Shop",
    "time.hour": 9,
    "time.weekday": 0,
    "work.skills": ["billing", "japanese"],
    "context.vip": True,
    "context.empty": "",
}


def holds(field: str, operator: str, value=None, facts=None, **extra) -> bool:
    condition = {
        "field": field,
        "operator": operator,
        **({"value": value} if value is not None else {}),
        **extra,
    }
    return condition_matches(condition, FACTS if facts is None else facts)


class TestOperators:
    def test_equals_compares_text_without_regard_to_case(self):
        assert holds("customer.language", "equals", "JA")
        assert not holds("customer.language", "equals", "th")

    def test_equals_compares_numbers_by_value_whether_written_as_numbers_or_text(self):
        assert holds("time.hour", "equals", 9)
        assert holds("time.hour", "equals", "9")
        assert holds("time.hour", "equals", 9.0)
        assert not holds("time.hour", "equals", 10)

    def test_equals_on_a_list_field_holds_when_one_item_equals(self):
        assert holds("work.skills", "equals", "Billing")
        assert not holds("work.skills", "equals", "thai")

    def test_equals_compares_true_and_false(self):
        assert holds("context.vip", "equals", True)
        assert not holds("context.vip", "equals", False)

    def test_not_equals_is_the_opposite_of_equals(self):
        assert holds("customer.language", "not_equals", "th")
        assert not holds("customer.language", "not_equals", "Ja")

    def test_contains_finds_a_part_of_the_text_without_regard_to_case(self):
        assert holds("message.text", "contains", "invoice")
        assert not holds("message.text", "contains", "refund")

    def test_contains_on_a_list_field_means_one_item_equals(self):
        assert holds("work.skills", "contains", "japanese")
        assert not holds("work.skills", "contains", "japan")

    def test_not_contains_is_the_opposite_of_contains(self):
        assert holds("message.text", "not_contains", "refund")
        assert not holds("message.text", "not_contains", "Invoice")

    def test_starts_with_looks_at_the_beginning_only(self):
        assert holds("customer.display_name", "starts_with", "aiko")
        assert not holds("customer.display_name", "starts_with", "Tanaka")

    def test_regex_searches_anywhere_and_is_case_sensitive_as_written(self):
        assert holds("message.text", "regex", r"#\d{4}")
        assert not holds("message.text", "regex", "invoice")
        assert holds("message.text", "regex", "(?i)invoice")

    def test_in_holds_when_the_field_equals_one_of_the_listed_values(self):
        assert holds("customer.language", "in", ["th", "JA"])
        assert holds("time.hour", "in", [8, 9])
        assert not holds("customer.language", "in", ["th", "en"])

    def test_exists_tells_present_from_missing_or_empty(self):
        assert holds("customer.display_name", "exists")
        assert holds("customer.display_name", "exists", True)
        assert not holds("context.empty", "exists")
        assert holds("context.empty", "exists", False)
        assert not holds("contact.email", "exists")


class TestMissingFields:
    @pytest.mark.parametrize(
        ("operator", "value", "expected"),
        [
            ("equals", "x", False),
            ("not_equals", "x", True),
            ("contains", "x", False),
            ("not_contains", "x", True),
            ("starts_with", "x", False),
            ("regex", ".*", False),
            ("in", ["x"], False),
            ("exists", True, False),
        ],
    )
    def test_a_missing_field_holds_only_for_the_negative_operators(self, operator, value, expected):
        assert holds("context.order_id", operator, value) is expected
        assert (
            holds("customer.display_name", operator, value, facts={"customer.display_name": ""}) is expected
        )


class TestBadTypesAtEvaluation:
    def test_a_rule_with_a_list_where_a_text_belongs_cannot_be_evaluated(self):
        with pytest.raises(RuleError):
            holds("message.text", "contains", ["a", "b"])

    def test_in_without_a_list_cannot_be_evaluated(self):
        with pytest.raises(RuleError):
            holds("customer.language", "in", "ja")

    def test_an_unknown_field_cannot_be_evaluated(self):
        with pytest.raises(RuleError):
            holds("customer.nme", "equals", "x")

    def test_a_number_field_is_compared_as_its_text_by_contains(self):
        assert holds("time.hour", "contains", "9")

    def test_conditions_must_be_a_list(self):
        with pytest.raises(RuleError):
            conditions_match({"field": "message.text"}, FACTS)


def test_all_conditions_must_hold_and_none_always_holds():
    invoice = {"field": "message.text", "operator": "contains", "value": "invoice"}
    thai = {"field": "customer.language", "operator": "equals", "value": "th"}
    assert conditions_match([], FACTS)
    assert conditions_match([invoice], FACTS)
    assert not conditions_match([invoice, thai], FACTS)


class TestValidation:
    def test_an_unknown_field_is_refused_with_its_place_named(self):
        with pytest.raises(ValidationError) as error:
            conditions_validate(
                [
                    {"field": "message.text", "operator": "contains", "value": "a"},
                    {"field": "customer.nme", "operator": "equals", "value": "b"},
                ]
            )
        assert error.value.messages == ["conditions[1].field: unknown field 'customer.nme'."]

    def test_a_bad_regular_expression_is_refused_with_the_reason(self):
        with pytest.raises(ValidationError) as error:
            conditions_validate([{"field": "message.text", "operator": "regex", "value": "(unclosed"}])
        (message,) = error.value.messages
        assert message.startswith("conditions[0].value: bad regular expression '(unclosed'")

    def test_an_unknown_operator_is_refused(self):
        with pytest.raises(ValidationError) as error:
            conditions_validate([{"field": "message.text", "operator": "like", "value": "a"}])
        assert error.value.messages[0].startswith("conditions[0].operator: unknown operator 'like'")

    @pytest.mark.parametrize(
        ("condition", "message"),
        [
            ({"field": "message.text", "operator": "in", "value": "a"}, "conditions[0].value: in takes"),
            (
                {"field": "message.text", "operator": "equals", "value": ["a"]},
                "conditions[0].value: equals takes",
            ),
            ({"field": "message.text", "operator": "equals"}, "conditions[0].value: equals takes"),
            (
                {"field": "message.text", "operator": "exists", "value": "yes"},
                "conditions[0].value: exists takes",
            ),
            ({"field": "message.text", "operator": "regex", "value": 5}, "conditions[0].value: regex takes"),
            (
                {"field": "message.text", "operator": "equals", "value": "a", "x": 1},
                "conditions[0]: unknown key",
            ),
            ("message.text contains a", "conditions[0]: a condition is an object"),
        ],
    )
    def test_values_of_the_wrong_type_are_refused(self, condition, message):
        with pytest.raises(ValidationError) as error:
            conditions_validate([condition])
        assert error.value.messages[0].startswith(message)

    def test_contact_and_context_fields_take_any_simple_name(self):
        conditions = [
            {"field": "contact.loyalty_tier", "operator": "equals", "value": "gold"},
            {"field": "context.order_id", "operator": "exists"},
        ]
        assert conditions_validate(conditions) == conditions
        with pytest.raises(ValidationError):
            conditions_validate([{"field": "context.", "operator": "exists"}])

    def test_what_classification_writes_is_checked_key_by_key(self):
        assert classification_output_validate(
            {"priority": 1, "skills": {"billing": 5}, "context": {"vip": True}}
        )
        with pytest.raises(ValidationError) as error:
            classification_output_validate({"priority": -1, "skills": {"billing": 11}, "colour": "red"})
        assert error.value.messages == [
            "set.colour: unknown attribute (one of priority, capacity, skills, context).",
            "set.priority: a whole number, 0 or more.",
            "set.skills.billing: a level from 1 to 10.",
        ]

    def test_a_split_must_add_up_to_one_hundred_with_each_queue_once(self):
        assert split_validate([{"queue": 1, "percent": 70}, {"queue": 2, "percent": 30}])
        with pytest.raises(ValidationError) as error:
            split_validate([{"queue": 1, "percent": 70}, {"queue": 2, "percent": 20}])
        assert error.value.messages == ["split: the percentages add up to 90, not 100."]
        with pytest.raises(ValidationError) as error:
            split_validate([{"queue": 1, "percent": 50}, {"queue": 1, "percent": 50}])
        assert error.value.messages == ["split[1].queue: queue 1 is in the split twice."]


class TestSplit:
    def test_one_conversation_always_gets_the_same_share(self):
        assert split_bucket(rule_id=3, key=42) == split_bucket(rule_id=3, key=42)

    def test_shares_follow_the_percentages_over_many_conversations(self):
        split = [{"queue": 1, "percent": 70}, {"queue": 2, "percent": 30}]
        picks = [split_pick(split, bucket=split_bucket(rule_id=7, key=key)) for key in range(2000)]
        share = picks.count(1) / len(picks)
        assert 0.66 < share < 0.74

    def test_buckets_are_laid_end_to_end_in_order(self):
        split = [{"queue": 1, "percent": 70}, {"queue": 2, "percent": 30}]
        assert split_pick(split, bucket=0) == 1
        assert split_pick(split, bucket=69) == 1
        assert split_pick(split, bucket=70) == 2
        assert split_pick(split, bucket=99) == 2


TOKYO = "Asia/Tokyo"
NINE_TO_FIVE_WEEKDAYS = [OpeningPeriod(day, datetime.time(9), datetime.time(17)) for day in range(5)]


def utc(*args: int) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=datetime.UTC)


class TestOperatingHours:
    def test_hours_are_read_in_the_queues_time_zone(self):
        # Monday 2026-03-02 01:00 UTC is 10:00 in Tokyo (open), 02:00 in Berlin (closed).
        at = utc(2026, 3, 2, 1, 0)
        assert queue_open_at(at=at, timezone_name=TOKYO, periods=NINE_TO_FIVE_WEEKDAYS, holidays=[])
        assert not queue_open_at(
            at=at, timezone_name="Europe/Berlin", periods=NINE_TO_FIVE_WEEKDAYS, holidays=[]
        )

    def test_the_start_is_open_and_the_end_is_closed(self):
        monday_9_tokyo = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=zoneinfo.ZoneInfo(TOKYO))
        monday_17_tokyo = datetime.datetime(2026, 3, 2, 17, 0, tzinfo=zoneinfo.ZoneInfo(TOKYO))
        assert queue_open_at(
            at=monday_9_tokyo, timezone_name=TOKYO, periods=NINE_TO_FIVE_WEEKDAYS, holidays=[]
        )
        assert not queue_open_at(
            at=monday_17_tokyo, timezone_name=TOKYO, periods=NINE_TO_FIVE_WEEKDAYS, holidays=[]
        )

    def test_the_weekday_is_the_local_one(self):
        # Sunday 2026-03-01 23:30 UTC is already Monday 08:30 in Tokyo: closed (before 9), Monday 09:30 open.
        assert not queue_open_at(
            at=utc(2026, 3, 1, 23, 30), timezone_name=TOKYO, periods=NINE_TO_FIVE_WEEKDAYS, holidays=[]
        )
        assert queue_open_at(
            at=utc(2026, 3, 2, 0, 30), timezone_name=TOKYO, periods=NINE_TO_FIVE_WEEKDAYS, holidays=[]
        )

    def test_a_holiday_closes_the_whole_local_day(self):
        # 2026-03-02 is a holiday in Tokyo: 10:00 Tokyo (01:00 UTC) is closed; the day before in UTC
        # (2026-03-01 23:00 UTC = 03-02 08:00 Tokyo) is the holiday too.
        holiday = [datetime.date(2026, 3, 2)]
        assert not queue_open_at(
            at=utc(2026, 3, 2, 1, 0), timezone_name=TOKYO, periods=NINE_TO_FIVE_WEEKDAYS, holidays=holiday
        )
        assert queue_open_at(
            at=utc(2026, 3, 3, 1, 0), timezone_name=TOKYO, periods=NINE_TO_FIVE_WEEKDAYS, holidays=holiday
        )

    def test_without_a_schedule_the_queue_is_open_except_on_holidays(self):
        assert queue_open_at(at=utc(2026, 3, 1, 3, 0), timezone_name=TOKYO, periods=[], holidays=[])
        assert not queue_open_at(
            at=utc(2026, 3, 1, 3, 0), timezone_name=TOKYO, periods=[], holidays=[datetime.date(2026, 3, 1)]
        )

    def test_time_facts_are_in_the_workstreams_time_zone(self):
        assert time_facts(at=utc(2026, 3, 1, 23, 30), timezone_name=TOKYO) == {
            "time.weekday": 0,
            "time.hour": 8,
        }
        assert time_facts(at=utc(2026, 3, 1, 23, 30), timezone_name="UTC") == {
            "time.weekday": 6,
            "time.hour": 23,
        }

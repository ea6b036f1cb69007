"""line-bot-sdk's generated models as validators, for when LINE's OpenAPI files are not at hand.

line-bot-sdk's `linebot.v3.messaging` and `linebot.v3.webhooks` models are generated from the same
OpenAPI descriptions as `settings.LINE_OPENAPI_DIR` holds, and ship with the project. The LINE stand-in
checks with them when that folder is missing (a fresh clone has no `../shared/line-openapi/`), so a
request or webhook body it serves is still checked against LINE's schemas, field by field: required
properties, types, enums, lengths, sizes and patterns, with polymorphic objects (`Message`, `Action`,
`Event`, `Source`, `MessageContent`...) checked as the subtype their `type` names.

What they cannot check, compared with the OpenAPI files: headers and query parameters (the caller checks
the retry key), and any change LINE made to its descriptions after this SDK release (an event type the
SDK already knows, such as `messageEdited`, is accepted even where the pinned webhook.yml has no such
type). Both validators return the same `SpecProblem`s as `channels_line.openapi`, with `property` written
as LINE writes it (`messages[0].text`).

The SDK's `from_dict` stops at the first problem and forgets where it was (a nested model reports
`text`, not `messages[0].text`), so the models are walked here: each field is checked by the model's own
pydantic field (the same validators `from_dict` runs), and fields that hold models are walked into.
`from_dict` then has the last word, so a body the SDK itself would not read is never passed.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

from linebot.v3 import messaging, webhooks
from pydantic.v1 import BaseModel, ValidationError
from pydantic.v1.fields import (
    SHAPE_DICT,
    SHAPE_LIST,
    SHAPE_MAPPING,
    SHAPE_SEQUENCE,
    SHAPE_SINGLETON,
    ModelField,
)

from channels_line.openapi import SpecProblem, _property_path

MUST_BE_SPECIFIED = "Must be specified"

# The Messaging API operations with a JSON request body that the LINE stand-in serves (and the other
# message-sending ones, for callers that check a body before sending it).
REQUEST_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/v2/bot/message/push"): messaging.PushMessageRequest,
    ("POST", "/v2/bot/message/reply"): messaging.ReplyMessageRequest,
    ("POST", "/v2/bot/message/multicast"): messaging.MulticastRequest,
    ("POST", "/v2/bot/message/broadcast"): messaging.BroadcastRequest,
    ("POST", "/v2/bot/message/narrowcast"): messaging.NarrowcastRequest,
    ("POST", "/v2/bot/chat/loading/start"): messaging.ShowLoadingAnimationRequest,
    ("POST", "/v2/bot/chat/markAsRead"): messaging.MarkMessagesAsReadByTokenRequest,
    ("POST", "/v2/bot/message/markAsRead"): messaging.MarkMessagesAsReadRequest,
}

_Path = tuple[str | int, ...]
_LIST_SHAPES = {SHAPE_LIST, SHAPE_SEQUENCE}
_DICT_SHAPES = {SHAPE_DICT, SHAPE_MAPPING}


def sdk_messaging_request_problems(
    method: str, path: str, headers: Mapping[str, str] | None, body_bytes: bytes | None
) -> list[SpecProblem]:
    """Problems of a Messaging API request body against line-bot-sdk's request model for the
    operation ([] = valid). A body-less request (a GET) has nothing to check; a body sent to an
    operation without a known model is a problem rather than a silent pass."""
    model = REQUEST_MODELS.get((method.upper(), path))
    if model is None:
        if body_bytes:
            return [SpecProblem("", f"No line-bot-sdk request model for {method.upper()} {path}")]
        return []
    if not body_bytes:
        return [SpecProblem("", "The request body is required")]
    content_type = next(
        (value for name, value in (headers or {}).items() if name.lower() == "content-type"), ""
    )
    if content_type.split(";")[0].strip().lower() != "application/json":
        return [SpecProblem("Content-Type", "Must be application/json")]
    try:
        body = json.loads(body_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [SpecProblem("", f"The request body could not be read: {exc}")]
    return _body_problems(model, body)


def sdk_webhook_body_problems(body: Any) -> list[SpecProblem]:
    """Problems of a decoded webhook body against line-bot-sdk's `CallbackRequest` ([] = valid).

    An event type the SDK does not map is a problem, as it is for webhook.yml: the SDK would turn it
    into an `UnknownEvent` and drop what it carries."""
    return _body_problems(webhooks.CallbackRequest, body)


def _body_problems(model: type[BaseModel], body: Any) -> list[SpecProblem]:
    problems = _model_problems(model, body, ())
    if not problems:
        try:
            model.from_dict(body)
        except (ValidationError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # The walk above missed something the SDK's own reading catches: never pass such a body.
            problems.append(SpecProblem("", f"line-bot-sdk cannot read it as {model.__name__}: {exc}"))
    return problems


def _model_problems(model: type[BaseModel], value: Any, at: _Path) -> list[SpecProblem]:
    if not isinstance(value, dict):
        return [SpecProblem(_property_path(at), "Must be a JSON object")]
    dispatched = _subtype(model, value, at)
    if isinstance(dispatched, SpecProblem):
        return [dispatched]
    model = dispatched
    problems: list[SpecProblem] = []
    for field in model.__fields__.values():
        raw = value.get(field.alias)
        # The SDK's from_dict reads an explicit null as an absent property.
        if raw is None:
            if field.required:
                problems.append(SpecProblem(_property_path((*at, field.alias)), MUST_BE_SPECIFIED))
            continue
        problems.extend(_field_problems(model, field, raw, (*at, field.alias)))
    return problems


def _subtype(model: type[BaseModel], value: dict[str, Any], at: _Path) -> type[BaseModel] | SpecProblem:
    """The subtype a polymorphic base (`Message`, `Event`...) maps `value` to by its discriminator.

    A subtype named directly (`members: [UserSource]`) declares its `type` as a plain string with a
    default, which would take any value or none; it is held to its base's mapping instead."""
    base = next((cls for cls in model.__mro__ if _discriminator_map(cls) is not None), None)
    if base is None:
        return model
    mapping = _discriminator_map(base) or {}
    prop = base.__dict__[f"_{base.__name__}__discriminator_property_name"]
    tag = value.get(prop)
    where = _property_path((*at, prop))
    if tag is None:
        return SpecProblem(where, MUST_BE_SPECIFIED)
    if base is not model:
        expected = sorted(key for key, name in mapping.items() if name == model.__name__)
        return model if tag in expected else SpecProblem(where, f"{tag!r} is not one of {expected}")
    if not isinstance(tag, str) or tag not in mapping:
        return SpecProblem(where, f"{tag!r} is not one of {sorted(mapping)}")
    # The generated from_dict looks subtypes up in the models package; so does this.
    package = importlib.import_module(model.__module__.rsplit(".", 1)[0])
    return getattr(package, mapping[tag])


def _discriminator_map(model: type) -> dict[str, str] | None:
    # Generated as a private class attribute, so only the base that declares it has it under its name.
    return model.__dict__.get(f"_{model.__name__}__discriminator_value_class_map")


def _field_problems(model: type[BaseModel], field: ModelField, raw: Any, at: _Path) -> list[SpecProblem]:
    inner = field.type_
    holds_models = isinstance(inner, type) and issubclass(inner, BaseModel)
    if holds_models and field.shape == SHAPE_SINGLETON:
        return _model_problems(inner, raw, at)
    if holds_models and field.shape in _LIST_SHAPES:
        if not isinstance(raw, list):
            return [SpecProblem(_property_path(at), "Must be an array")]
        problems = _size_problems(field, raw, at)
        for index, item in enumerate(raw):
            problems.extend(_model_problems(inner, item, (*at, index)))
        return problems
    if holds_models and field.shape in _DICT_SHAPES:
        if not isinstance(raw, dict):
            return [SpecProblem(_property_path(at), "Must be a JSON object")]
        return [problem for key, item in raw.items() for problem in _model_problems(inner, item, (*at, key))]
    # Scalars, enums and lists of them: the field's own validators, as from_dict runs them.
    _, errors = field.validate(raw, {}, loc=field.alias, cls=model)
    if not errors:
        return []
    wrapped = errors if isinstance(errors, list) else [errors]
    return [
        SpecProblem(_property_path((*at, *error["loc"][1:])), error["msg"])
        for error in ValidationError(wrapped, model).errors()
    ]


def _size_problems(field: ModelField, raw: list[Any], at: _Path) -> list[SpecProblem]:
    low = getattr(field.outer_type_, "min_items", None)
    high = getattr(field.outer_type_, "max_items", None)
    if (low is None or len(raw) >= low) and (high is None or len(raw) <= high):
        return []
    # Worded as LINE words it (and as the stand-in's own limit checks do).
    return [SpecProblem(_property_path(at), f"Size must be between {low or 0} and {high or 'unlimited'}")]

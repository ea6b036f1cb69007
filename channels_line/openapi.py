"""LINE's official OpenAPI descriptions (`settings.LINE_OPENAPI_DIR`) as validators.

`messaging-api.yml` describes every call we make to LINE; `webhook.yml` every payload LINE sends us.
The LINE stand-in checks the requests it receives against the first and the webhook bodies it sends
against the second, and tests use both to prove that payloads are real LINE payloads.

The folder is not part of the project. Callers check `openapi_dir_available()` first: the validators
raise `OpenAPIUnavailable` rather than answer "no problems" for a spec they could not read, so that a
test asserting an empty list cannot pass by accident.

LINE writes polymorphism as a base schema carrying a `discriminator` (`Message`, `Event`, `Action`...)
that subtypes include through `allOf`. JSON Schema ignores `discriminator`, and openapi-schema-validator
only honours it next to `allOf`/`oneOf`/`anyOf`, so as written a `{"type": "text"}` message would only
be checked against the common `Message` fields. `_dispatching_schemas` rewrites each such base into a
dispatcher (`allOf` + `discriminator`, which openapi-schema-validator resolves to the mapped subtype)
and points the subtypes at an untouched copy of the base, so that the check recurses exactly once.
"""

from __future__ import annotations

import copy
import functools
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

MESSAGING_API_FILE = "messaging-api.yml"
WEBHOOK_FILE = "webhook.yml"

# Every operation is matched against one made-up server, whatever host (api.line.me or
# api-data.line.me) the spec gives it: the stand-in serves both hosts on one address.
_SPEC_HOST_URL = "http://line-standin.invalid"
_SCHEMAS_PREFIX = "#/components/schemas/"
_BASE_SUFFIX = "__base"
_UNRESOLVED_TYPE = re.compile(r"reference '#/components/schemas/(?P<name>[^']*)' could not be resolved")
_REQUIRED = re.compile(r"^'(?P<name>[^']+)' is a required property$")


class OpenAPIUnavailable(RuntimeError):
    """The OpenAPI folder (settings.LINE_OPENAPI_DIR) or one of its files is missing or unreadable."""


@dataclass(frozen=True)
class SpecProblem:
    """One way a request or payload departs from LINE's OpenAPI description.

    `property` is written as LINE writes it in error details (`messages[0].text`), or is empty when
    the problem is about the request as a whole."""

    property: str
    message: str

    def __str__(self) -> str:
        return f"{self.property}: {self.message}" if self.property else self.message


def openapi_dir() -> Path:
    """The folder holding LINE's OpenAPI descriptions, from settings.LINE_OPENAPI_DIR."""
    return Path(settings.LINE_OPENAPI_DIR)


def openapi_dir_available(directory: Path | str | None = None) -> bool:
    """Whether both LINE OpenAPI files can be read from `directory` (default: the setting)."""
    folder = Path(directory) if directory is not None else openapi_dir()
    return all((folder / name).is_file() for name in (MESSAGING_API_FILE, WEBHOOK_FILE))


def openapi_preload(directory: Path | str | None = None) -> None:
    """Read and prepare both specs now (about a second) instead of on the first validation, which
    could otherwise outlast a client's timeout. Raises OpenAPIUnavailable like the validators."""
    _specs(_resolve_dir(directory))


def validate_messaging_request(
    method: str,
    path: str,
    query: Mapping[str, str | list[str]] | None,
    headers: Mapping[str, str] | None,
    body_bytes: bytes | None,
    *,
    directory: Path | str | None = None,
) -> list[str]:
    """Problems of one HTTP request against messaging-api.yml, as readable strings ([] = valid)."""
    return [
        str(problem)
        for problem in messaging_request_problems(
            method, path, query, headers, body_bytes, directory=directory
        )
    ]


def validate_webhook_body(body: Any, *, directory: Path | str | None = None) -> list[str]:
    """Problems of a decoded webhook body against webhook.yml's CallbackRequest ([] = valid)."""
    return [str(problem) for problem in webhook_body_problems(body, directory=directory)]


def messaging_request_problems(
    method: str,
    path: str,
    query: Mapping[str, str | list[str]] | None,
    headers: Mapping[str, str] | None,
    body_bytes: bytes | None,
    *,
    directory: Path | str | None = None,
) -> list[SpecProblem]:
    """Problems of one HTTP request against messaging-api.yml, with the property each is about."""
    from openapi_core.datatypes import RequestParameters
    from werkzeug.datastructures import Headers, ImmutableMultiDict

    specs = _specs(_resolve_dir(directory))
    header_values = Headers(list((headers or {}).items()))
    query_pairs = [
        (name, item)
        for name, value in (query or {}).items()
        for item in (value if isinstance(value, list) else [value])
    ]
    request = _SpecRequest(
        host_url=_SPEC_HOST_URL,
        path=path,
        method=method.lower(),
        body=body_bytes or None,
        content_type=(header_values.get("Content-Type") or "").lower(),
        parameters=RequestParameters(query=ImmutableMultiDict(query_pairs), header=header_values),
    )
    # jsonschema-path caches resolved references on shared objects; one request at a time is
    # plenty for a stand-in and rules out races between server threads.
    with specs.lock:
        errors = list(specs.messaging.iter_request_errors(request))
    problems: list[SpecProblem] = []
    for error in errors:
        problems.extend(_request_error_problems(error))
    return problems


def webhook_body_problems(body: Any, *, directory: Path | str | None = None) -> list[SpecProblem]:
    """Problems of a decoded webhook body against webhook.yml, with the property each is about.

    An event type webhook.yml does not map (`messageEdited`, added by LINE after this file) is a
    problem: the body is then not one the spec describes, whatever the SDK makes of it."""
    return _schema_problems(_specs(_resolve_dir(directory)).callback_request, body, ())


@dataclass
class _SpecRequest:
    """A request as openapi-core reads it (its `Request` protocol)."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: Any


@dataclass
class _Specs:
    messaging: Any
    callback_request: Any
    lock: threading.Lock


def _resolve_dir(directory: Path | str | None) -> str:
    folder = Path(directory) if directory is not None else openapi_dir()
    return str(folder.resolve())


@functools.lru_cache(maxsize=4)
def _specs(directory: str) -> _Specs:
    from openapi_core import OpenAPI
    from openapi_core.configurations import Config
    from openapi_schema_validator import OAS30Validator, oas30_format_checker

    folder = Path(directory)
    if not openapi_dir_available(folder):
        raise OpenAPIUnavailable(
            f"LINE's OpenAPI descriptions ({MESSAGING_API_FILE}, {WEBHOOK_FILE}) are not in {folder}; "
            "set LINE_OPENAPI_DIR to the folder that holds them."
        )
    try:
        messaging = yaml.safe_load((folder / MESSAGING_API_FILE).read_text(encoding="utf-8"))
        webhook = yaml.safe_load((folder / WEBHOOK_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise OpenAPIUnavailable(f"Could not read LINE's OpenAPI descriptions in {folder}: {exc}") from exc

    messaging = _dispatching_schemas(_single_server(messaging))
    webhook = _dispatching_schemas(webhook)
    # The files are LINE's and known to be well-formed; validating them at every start costs a
    # second and proves nothing new.
    messaging_api = OpenAPI.from_dict(messaging, config=Config(spec_validator_cls=None))

    # A root document that carries `components` resolves LINE's `#/components/...` references.
    callback_request = {"$ref": _SCHEMAS_PREFIX + "CallbackRequest", "components": webhook["components"]}
    return _Specs(
        messaging=messaging_api,
        callback_request=OAS30Validator(callback_request, format_checker=oas30_format_checker),
        lock=threading.Lock(),
    )


def _single_server(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["servers"] = [{"url": _SPEC_HOST_URL}]
    for path_item in spec.get("paths", {}).values():
        path_item.pop("servers", None)
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation.pop("servers", None)
    return spec


def _dispatching_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """Turn each discriminator-carrying base schema into a dispatcher (see the module docstring)."""
    spec = copy.deepcopy(spec)
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    bases = [
        name
        for name, schema in schemas.items()
        if isinstance(schema, dict)
        and "discriminator" in schema
        and not any(key in schema for key in ("allOf", "oneOf", "anyOf"))
    ]
    for name in bases:
        base = dict(schemas[name])
        discriminator = base.pop("discriminator")
        schemas[name + _BASE_SUFFIX] = base
        schemas[name] = {
            "allOf": [{"$ref": _SCHEMAS_PREFIX + name + _BASE_SUFFIX}],
            "discriminator": discriminator,
            # Without a mapping entry openapi-schema-validator falls back to the schema *named* like
            # the value, which would accept `{"type": "TextMessage"}`; LINE knows only the mapped values.
            "properties": {discriminator["propertyName"]: {"enum": sorted(discriminator.get("mapping", {}))}},
        }
        for target in discriminator.get("mapping", {}).values():
            subtype = schemas.get(target.removeprefix(_SCHEMAS_PREFIX), {})
            for part in subtype.get("allOf", []):
                if part.get("$ref") == _SCHEMAS_PREFIX + name:
                    part["$ref"] = _SCHEMAS_PREFIX + name + _BASE_SUFFIX
    return spec


def _schema_problems(validator: Any, instance: Any, prefix: Iterable[str | int]) -> list[SpecProblem]:
    return _problems(validator.iter_errors(instance), tuple(prefix))


def _problems(errors: Iterable[Any], prefix: tuple[str | int, ...]) -> list[SpecProblem]:
    problems = []
    for error in errors:
        message = error.message
        if _UNRESOLVED_TYPE.search(message):
            # An unmapped discriminator value; the dispatcher's enum already reports it readably.
            continue
        parts = [*prefix, *error.absolute_path]
        required = _REQUIRED.match(message)
        if error.validator == "required" and required:
            # LINE names the missing field itself, not the object that lacks it.
            parts.append(required.group("name"))
            message = "Must be specified"
        problems.append(SpecProblem(property=_property_path(parts), message=message))
    return problems


def _property_path(parts: Iterable[str | int]) -> str:
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _request_error_problems(error: Exception) -> list[SpecProblem]:
    from openapi_core.templating.paths.exceptions import PathError
    from openapi_core.validation.request.exceptions import (
        MissingRequiredRequestBody,
        ParameterValidationError,
        RequestBodyValidationError,
        SecurityValidationError,
    )

    if isinstance(error, PathError):
        return [SpecProblem("", f"Not an operation of messaging-api.yml: {error}")]
    if isinstance(error, SecurityValidationError):
        return [SpecProblem("Authorization", "Must be a Bearer channel access token")]
    if isinstance(error, ParameterValidationError):
        schema_errors = list(getattr(error.__cause__, "schema_errors", None) or [])
        if not schema_errors:
            return [SpecProblem(error.name, str(error))]
        return [SpecProblem(error.name, schema_error.message) for schema_error in schema_errors]
    if isinstance(error, MissingRequiredRequestBody):
        return [SpecProblem("", "The request body is required")]
    if isinstance(error, RequestBodyValidationError):
        schema_errors = getattr(error.__cause__, "schema_errors", None)
        if schema_errors is None:
            # Not JSON, or a media type the operation does not take.
            return [SpecProblem("", f"The request body could not be read: {error.__cause__ or error}")]
        return _problems(schema_errors, ())
    return [SpecProblem("", str(error))]

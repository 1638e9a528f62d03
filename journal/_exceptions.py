"""Exceptions as the journal keeps them, and rebuilt from it: replay raises what live raised.

What a record holds (`RecordedError`):

* `type` (`module:qualname`), `message` (`str(exc)`), `args` (JSON values, or described like
  the objects below);
* `attributes`: the instance's own attributes whose values JSON holds exactly (`status=503`,
  `retryable=True`, `__notes__`), and `objects`: attributes of a few known kinds, described —
  bytes, tuples, exceptions (recorded by these same rules), pydantic models and enums (by
  class and value), httpx/httpx2 requests and responses (see `_http_parts`);
* `os_error`: an OSError's errno, strerror, filename, filename2 (and characters_written);
* `cause`: `__cause__`, recorded by the same rules, and `group`, an ExceptionGroup's members;
* `unrecorded`: what could not be kept (a lock, a socket, an attribute over 256 KiB, a cause
  chain deeper than 8). `traceback`: the text, on the outermost record only.

How it is rebuilt (`RecordedError.rebuild`): only a class already imported is used (decoding a
journal never imports code). The constructor is called with `args`; when that fails or does not
give the same exception back, the instance is made without its constructor
(`cls.__new__(cls, *args)`, as pickle and the Anthropic SDK do). Then attributes, objects and
OSError fields are put back and the cause is attached. A rebuild counts only if recording it
gives the very same record: an exception is rebuilt whole, with its cause, or not at all (None),
and the engine then raises `StepFailed` live and on replay alike. A record holding redaction
markers is not rebuilt either: the original held secrets the journal never saw.
"""

from __future__ import annotations

import base64
import enum
import sys
import traceback
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from ._fidelity import difference
from ._http_parts import describe_http, revive_http
from ._secret_text import MARKER as _MARKER

ATTRIBUTE_LIMIT = 256 * 1024
"""Bytes of JSON one attribute (or response body) may take; a bigger one is not kept."""
CAUSE_DEPTH = 8
"""Causes recorded below an exception; a longer chain is not rebuilt."""
_MISSING: Any = object()


class RecordedError(BaseModel):
    """An exception as the journal keeps it (see the module docstring for every field)."""

    model_config = ConfigDict(frozen=True)

    type: str
    """`module:qualname` of the exception class."""
    message: str
    args: list[Any] | None = None
    """The exception's args when they can be kept, so it can be rebuilt exactly."""
    arg_objects: dict[int, dict[str, Any]] = {}
    """Args of known kinds (bytes, tuples, ...) by position, described; `args` holds null."""
    traceback: str | None = None
    attributes: dict[str, Any] | None = None
    """JSON-able instance attributes. None in records written before attributes were kept:
    those rebuild as they always did, `type(*args)` with the same message."""
    objects: dict[str, dict[str, Any]] = {}
    """Attributes of known kinds (models, enums, HTTP requests and responses), described."""
    os_error: dict[str, Any] | None = None
    cause: RecordedError | None = None
    group: list[RecordedError] | None = None
    unrecorded: list[str] = []
    """Attributes or parts that could not be kept: such an exception is never rebuilt."""

    @classmethod
    def from_exception(cls, exc: BaseException) -> RecordedError:
        """The record of `exc`, its cause chain included. Never fails."""
        return _record(exc, 0, with_traceback=True)

    def summary(self) -> str:
        """`Type: message`, the type without its module: how one line names the failure."""
        return f"{self.type.rpartition(':')[2]}: {self.message}"

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_defaults=True))

    @classmethod
    def decode(cls, payload: bytes) -> RecordedError:
        return cls.model_validate_json(payload)

    def redacted(self, redact: Callable[[bytes], bytes] | None) -> RecordedError:
        """The record as the journal stores it once `redact` (a journal's redactor) ran."""
        if redact is None:
            return self
        payload = self.encode()
        stored = redact(payload)
        return self if stored is payload else RecordedError.decode(stored)

    def rebuild(self) -> Exception | None:
        """The exception as an instance of its own type, the same in every recorded part, or
        None when that is impossible (see the module docstring).

        Only classes whose module is already imported are considered: decoding a journal must
        never import code, so a journal from an untrusted source is safe to open.
        """
        if self.attributes is None:
            return _rebuild_legacy(self)
        if _MARKER.search(self.encode().decode()) is not None:
            return None
        return _rebuild(self, 0)


# -- recording -------------------------------------------------------------------------------


def _record(exc: BaseException, depth: int, *, with_traceback: bool = False) -> RecordedError:
    exc_type = type(exc)
    unrecorded: list[str] = []
    try:
        message = str(exc)
    except Exception:
        message, unrecorded = f"<unprintable {exc_type.__qualname__}>", ["__str__"]
    attributes: dict[str, Any] = {}
    objects: dict[str, dict[str, Any]] = {}
    for name, value in getattr(exc, "__dict__", {}).items():
        kept = _exact(value)
        if kept is not _MISSING:
            attributes[name] = kept
            continue
        described = _describe(value, depth)
        if described is None:
            unrecorded.append(name)
        else:
            objects[name] = described
    unrecorded.extend(_slots(exc_type))
    group = None
    args, arg_objects = _args(exc.args, depth)
    if isinstance(exc, BaseExceptionGroup):
        group = [_record(member, depth + 1) for member in exc.exceptions]
        args = [exc.message]
    cause = None
    if exc.__cause__ is not None:
        if depth < CAUSE_DEPTH:
            cause = _record(exc.__cause__, depth + 1)
        else:
            unrecorded.append("__cause__")
    return RecordedError(
        type=f"{exc_type.__module__}:{exc_type.__qualname__}",
        message=message,
        args=args,
        arg_objects=arg_objects,
        traceback="".join(traceback.format_exception(exc)) if with_traceback else None,
        attributes=attributes,
        objects=objects,
        os_error=_os_fields(exc, unrecorded) if isinstance(exc, OSError) else None,
        cause=cause,
        group=group,
        unrecorded=unrecorded,
    )


def _args(args: tuple[Any, ...], depth: int) -> tuple[list[Any] | None, dict[int, dict[str, Any]]]:
    """(args as JSON, described args by position), or (None, {}) if one cannot be kept."""
    kept: list[Any] = []
    described: dict[int, dict[str, Any]] = {}
    for index, arg in enumerate(args):
        value = _exact(arg)
        if value is _MISSING:
            description = _describe(arg, depth)
            if description is None:
                return None, {}
            described[index], value = description, None
        kept.append(value)
    return kept, described


def _exact(value: Any) -> Any:
    """`value` as JSON gives it back, if that is the same value (same classes); else _MISSING."""
    if value is None or type(value) is bool:
        return value
    try:
        spelt = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return _MISSING
    if len(spelt) > ATTRIBUTE_LIMIT:
        return _MISSING
    back = orjson.loads(spelt)
    return back if difference(value, back) is None else _MISSING


def _slots(exc_type: type) -> list[str]:
    """Slot attributes of the class's own making: never kept, so never silently lost."""
    names: list[str] = []
    for klass in exc_type.__mro__:
        if klass.__module__ == "builtins":
            continue
        slots = vars(klass).get("__slots__", ())
        names.extend(s for s in ([slots] if isinstance(slots, str) else slots) if "__" not in s)
    return names


def _os_fields(exc: OSError, unrecorded: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("errno", "strerror", "filename", "filename2", "characters_written"):
        try:
            value = getattr(exc, name)
        except AttributeError:  # characters_written, unless it was given
            continue
        if isinstance(value, bytes) and name.startswith("filename"):
            fields[name] = {"bytes": base64.b64encode(value).decode()}
        elif (kept := _exact(value)) is not _MISSING and not isinstance(kept, dict):
            fields[name] = kept
        else:
            unrecorded.append(name)
    return fields


def _describe(value: Any, depth: int) -> dict[str, Any] | None:
    """A JSON description of an object of a known kind that `_revive` turns back into an
    equal one, or None (also when describing it fails: recording never raises)."""
    try:
        return _description(value, depth)
    except Exception:
        return None


def _description(value: Any, depth: int) -> dict[str, Any] | None:
    cls = type(value)
    if isinstance(value, BaseException):  # httpcore's ConnectError(OSError(...)), for one
        if depth >= CAUSE_DEPTH:
            return None
        nested = _record(value, depth + 1).model_dump(mode="json", exclude_defaults=True)
        return {"kind": "exception", "record": nested}
    if cls is bytes:
        if len(value) > ATTRIBUTE_LIMIT:
            return None
        return {"kind": "bytes", "base64": base64.b64encode(value).decode()}
    if cls is tuple:
        items = _exact(list(value))
        return None if items is _MISSING else {"kind": "tuple", "items": items}
    where = f"{cls.__module__}:{cls.__qualname__}"
    if isinstance(value, enum.Enum):
        kept = _exact(value.value)
        return None if kept is _MISSING else {"kind": "enum", "class": where, "value": kept}
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        faithful = difference(value, cls.model_validate(dumped)) is None
        if not faithful or len(orjson.dumps(dumped)) > ATTRIBUTE_LIMIT:
            return None
        return {"kind": "model", "class": where, "value": dumped}
    return describe_http(value)


# -- rebuilding ------------------------------------------------------------------------------


def _rebuild(record: RecordedError, depth: int) -> Exception | None:
    if record.unrecorded or record.args is None or record.attributes is None:
        return None
    cls = _class(record.type, Exception)
    if cls is None:
        return None
    cause = None if record.cause is None else _rebuild(record.cause, depth + 1)
    if record.cause is not None and cause is None:
        return None
    members: list[Exception] = []
    for member in record.group or ():
        rebuilt_member = _rebuild(member, depth + 1)
        if rebuilt_member is None:
            return None
        members.append(rebuilt_member)
    requests: dict[tuple[str, ...], Any] = {}  # one rebuilt request per recorded one
    objects = {name: _revive(desc, requests, depth) for name, desc in record.objects.items()}
    args = list(record.args)
    for index, described in record.arg_objects.items():
        args[index] = _revive(described, requests, depth)
    if any(part is _MISSING for part in (*args, *objects.values())):
        return None
    expected = record.model_copy(update={"traceback": None})
    for make in (_constructed, _allocated):
        try:
            exc = make(cls, args, members if record.group is not None else None)
            _restore(exc, record, args, objects)
        except Exception:
            continue
        if cause is not None:
            exc.__cause__ = cause
        if isinstance(exc, cls) and _record(exc, depth) == expected:
            rebuilt: Exception = exc
            return rebuilt
    return None


def _constructed(cls: type[Exception], args: list[Any], members: list[Exception] | None) -> Any:
    return cls(*args) if members is None else cls(args[0], members)


def _allocated(cls: type[Exception], args: list[Any], members: list[Exception] | None) -> Any:
    exc = cls.__new__(cls, *args) if members is None else cls.__new__(cls, args[0], members)
    if members is None:
        exc.args = tuple(args)
    return exc


def _restore(
    exc: Exception, record: RecordedError, args: list[Any], objects: dict[str, Any]
) -> None:
    if record.group is None and exc.args != tuple(args):
        exc.args = tuple(args)
    state = vars(exc)
    for name, value in (record.attributes or {}).items():
        state[name] = orjson.loads(orjson.dumps(value))  # a fresh copy for each rebuild
    state.update(objects)
    for name, value in (record.os_error or {}).items():
        if isinstance(value, dict):
            value = base64.b64decode(value["bytes"])
        if getattr(exc, name, _MISSING) != value:  # setting even None changes str(OSError)
            setattr(exc, name, value)


def _revive(described: dict[str, Any], requests: dict[tuple[str, ...], Any], depth: int) -> Any:
    """The object `_describe` described, or _MISSING."""
    kind = described.get("kind")
    try:
        if kind == "exception":
            nested = _rebuild(RecordedError.model_validate(described["record"]), depth + 1)
            return _MISSING if nested is None else nested
        if kind == "bytes":
            return base64.b64decode(described["base64"])
        if kind == "tuple":
            return tuple(orjson.loads(orjson.dumps(described["items"])))
        if kind == "enum":
            enum_cls = _class(described["class"], enum.Enum)
            return _MISSING if enum_cls is None else enum_cls(described["value"])
        if kind == "model":
            model_cls = _class(described["class"], BaseModel)
            return _MISSING if model_cls is None else model_cls.model_validate(described["value"])
        if kind in ("request", "response"):
            return revive_http(described, requests)
    except Exception:
        return _MISSING
    return _MISSING


def _class(path: str, base: type) -> Any:
    """The class at `module:qualname` if its module is already imported and it derives from
    `base`; None otherwise. Never imports."""
    module_name, _, qualname = path.partition(":")
    found: Any = sys.modules.get(module_name)
    for part in qualname.split(".") if found is not None else ():
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, base):
        return found
    return None


def _rebuild_legacy(record: RecordedError) -> Exception | None:
    """Records written before attributes were kept: `type(*args)`, if the message matches."""
    cls = _class(record.type, Exception)
    if cls is None or record.args is None:
        return None
    try:
        rebuilt = cls(*record.args)
    except Exception:
        return None
    return rebuilt if str(rebuilt) == record.message else None

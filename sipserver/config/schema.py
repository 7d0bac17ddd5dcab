"""One way to read a YAML document into typed values: sections of keys, each key with its type.

Three kinds of document are read with it: the config file (:mod:`sipserver.config.sections`), the
data files (:mod:`sipserver.ils.embedded.loader`) and a backend's options. A :class:`Section`
declares the keys of one mapping; each :class:`Key` names its type (a converter that checks and
converts the value), its default, a one-line description for the docs, and, in the config, whether
a reload applies it live. Declaring a key once gives it its check, its error, its default, its row
in the reference and its reload rule, so none of them can be forgotten.

Reading stops at the first problem with one error of one line naming the document, the key path
and what was expected. Unknown keys are refused with a did-you-mean hint: a typo must never leave
a setting at a default that fails open. How a kind of document writes that line (its paths, how
it shows a refused value, its exception class) is its :class:`Source`; the defaults here are the
config file's.

No Twisted, no I/O.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, NoReturn, TypeVar

import attrs

T = TypeVar("T")
U = TypeVar("U")

#: Names that go on the SIP wire or in log lines: no field delimiter, no control characters.
SAFE_NAME = re.compile(r"[^|\x00-\x1f\x7f]+")


class Reload(enum.Enum):
    """What a reload (SIGHUP) does with a config key whose value changed."""

    LIVE = "live"  #: the running server takes the new value
    RESTART = "restart"  #: the running value stays until a restart, and the reload names the key
    BY_KEY = "by key"  #: a section whose own keys say which


LIVE, RESTART, BY_KEY = Reload.LIVE, Reload.RESTART, Reload.BY_KEY


class _Marker(enum.Enum):
    REQUIRED = "required"
    MODEL = "the model's"


#: A key's default when it must be present.
REQUIRED = _Marker.REQUIRED
#: A key's default when its section's model class holds it (the default for a key).
MODEL = _Marker.MODEL


# --------------------------------------------------------------------------------------------------
# Where a value is, and how its document writes errors


def describe(value: Any) -> str:
    """A short one-line rendering of a value for an error message, as YAML would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def hint(word: Any, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of *choices*, compared without case; ``""`` if none."""
    if not isinstance(word, str):
        return ""
    folded = {c.casefold(): c for c in choices}
    close = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=0.6)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""


class Source:
    """One document being read: its name in errors, its warnings, and how it writes its errors.

    The methods are the config file's way; the data files and the backends' options override a
    few of them, so that their messages stay what their users know.
    """

    #: Whether ``key: null`` means the key's default (else the key's type judges null).
    null_is_absent = False

    def __init__(self, name: str, base_dir: str = "") -> None:
        self.name = name
        #: The folder that relative paths in the document are taken from.
        self.base_dir = base_dir
        self.warnings: list[str] = []
        #: Tables read so far that later keys refer to by name (``Named(publish=...)``, :class:`Ref`).
        self.defined: dict[str, Mapping[str, Any]] = {}

    def root(self) -> At:
        return At(self)

    def error(self, path: str, message: str) -> Exception:
        raise NotImplementedError

    def join(self, parent: str, key: str | int) -> str:
        """``accounts[0]``, ``server.lockout``, ``institutions['Main Library']``."""
        if isinstance(key, int):
            return f"{parent}[{key}]"
        if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key):
            return f"{parent}.{key}" if parent else key
        return f"{parent}[{key!r}]"

    def show(self, value: Any, secret: bool = False) -> str:
        return "a value not shown" if secret else describe(value)

    def unknown_key(self, at: At, allowed: Sequence[str]) -> Exception:
        return self.error(at.path, f"unknown key{hint(at.key, allowed)}; expected one of {', '.join(allowed)}")

    def missing(self, at: At, key: Key) -> Exception:
        example = f" (for example {key.example})" if key.example else ""
        return self.error(at.path, f"required key is missing{example}")

    def warn(self, at: At, message: str) -> None:
        self.warnings.append(f"{self.name}: {at.path}: {message}")


class At:
    """Where a value sits in its document. The path is only spelt out when an error needs it."""

    __slots__ = ("key", "parent", "secret", "source")

    def __init__(self, source: Source, parent: At | None = None, key: str | int = "", secret: bool = False) -> None:
        self.source = source
        self.parent = parent
        self.key = key
        self.secret = secret

    @property
    def path(self) -> str:
        if self.parent is None:
            return ""
        return self.source.join(self.parent.path, self.key)

    def child(self, key: str | int, secret: bool = False) -> At:
        return At(self.source, self, key, secret or self.secret)

    def fail(self, message: str) -> NoReturn:
        raise self.source.error(self.path, message)

    def expected(self, what: str, value: Any, more: str = "") -> NoReturn:
        """``expected <what>, got <value><more>``: the shape of almost every error."""
        self.fail(f"expected {what}, got {self.source.show(value, self.secret)}{more}")

    def warn(self, message: str) -> None:
        self.source.warn(self, message)


# --------------------------------------------------------------------------------------------------
# Types: check a value, convert it, describe it for the docs


class Type(Generic[T]):
    """Checks and converts one value. ``doc`` names the type in the reference's tables."""

    doc = "value"
    #: What a data file's error says a required key lacks (``expected <missing>, got None``).
    missing = "a value"

    def read(self, value: Any, at: At) -> T:
        raise NotImplementedError

    def then(self, after: Type[U]) -> Type[U]:
        """This type's check, then *after*'s on its result."""
        return Then(self, after)


class Then(Type[U]):
    def __init__(self, first: Type[Any], after: Type[U]) -> None:
        self.first, self.after = first, after
        self.doc = after.doc

    def read(self, value: Any, at: At) -> U:
        return self.after.read(self.first.read(value, at), at)


class Text(Type[str]):
    """A string. *empty*: "" allowed; *safe*: no ``|`` or control characters (it goes on the wire or
    in logs); *strip*: surrounding blanks removed; *quote_numbers*: a number says "quote it"."""

    def __init__(
        self,
        *,
        empty: bool = False,
        safe: bool = False,
        strip: bool = False,
        quote_numbers: bool = False,
        what: str | None = None,
        doc: str = "string",
    ) -> None:
        self.empty, self.safe, self.strip, self.quote_numbers = empty, safe, strip, quote_numbers
        self.what = what or ("a string" if empty or quote_numbers else "a non-empty string")
        self.doc = doc

    def read(self, value: Any, at: At) -> str:
        if not isinstance(value, str):
            more = ""
            if self.quote_numbers and isinstance(value, int | float) and not isinstance(value, bool):
                more = " (quote it)" if at.secret else f" (quote it: '{value}')"
            at.expected(self.what + more, value)
        text: str = value.strip() if self.strip else value
        if not text and not self.empty:
            at.expected("a non-empty string", text)
        if self.safe and text and not SAFE_NAME.fullmatch(text):
            at.expected("no '|' or control characters", text)
        return text


class Integer(Type[int]):
    """A whole number from *low* (to *high*)."""

    def __init__(self, low: int, high: int | None = None, *, noun: str = "an integer") -> None:
        self.low, self.high = low, high
        self.what = f"{noun} from {low} to {high}" if high is not None else f"{noun} >= {low}"
        self.doc = f"integer {low}..{high}" if high is not None else f"integer >= {low}"

    def read(self, value: Any, at: At) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < self.low
            or (self.high is not None and value > self.high)
        ):
            at.expected(self.what, value)
        return value


class Number(Type[float]):
    """A finite int or float, as a float: greater than *above* and at most *at_most* when given."""

    def __init__(
        self, *, above: float | None = None, at_most: float | None = None, unit: str = "seconds", what: str = ""
    ) -> None:
        self.above, self.at_most = above, at_most
        bounds = f" greater than {above:g}" if above is not None else ""
        bounds += f" and at most {at_most}" if at_most is not None else ""
        self.what = what or f"a number of {unit}{bounds}"
        self.doc = (
            f"{unit}"
            + (f" > {above:g}" if above is not None else "")
            + (f" and <= {at_most}" if at_most is not None else "")
        )

    def read(self, value: Any, at: At) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or (self.above is not None and value <= self.above)
            or (self.at_most is not None and value > self.at_most)
        ):
            at.expected(self.what, value)
        return float(value)


class Flag(Type[bool]):
    doc = "boolean"

    def read(self, value: Any, at: At) -> bool:
        if not isinstance(value, bool):
            at.expected("true or false", value)
        return value


class Choice(Type[Any]):
    """One of *choices* (compared without case when *fold*), as spelt in *choices*, or the value
    *choices* maps it to when it is a mapping."""

    def __init__(self, choices: Iterable[str] | Mapping[str, Any], *, fold: bool = True, what: str = "") -> None:
        self.values = dict(choices) if isinstance(choices, Mapping) else {c: c for c in choices}
        self.names = tuple(self.values)
        self.fold = fold
        self._folded = {name.casefold(): name for name in self.names} if fold else {n: n for n in self.names}
        self.what = what or f"one of {', '.join(self.names)}"
        self.doc = ", ".join(f"`{name}`" for name in self.names)

    def read(self, value: Any, at: At) -> Any:
        if isinstance(value, str):
            name = self._folded.get(value.casefold() if self.fold else value)
            if name is not None:
                return self.values[name]
        at.expected(self.what, value, hint(value, self.names))


class ListOf(Type[Any]):
    """A list of *item*, as *into* (a tuple by default). null is the empty list unless *null* says
    why it is refused; *scalar*: a single string is a list of one; *non_empty*: at least one item.
    *unique* is ``(attribute, message)``: no two items may share the attribute; the message is
    formatted with ``value`` and ``where`` (the first item's path)."""

    def __init__(
        self,
        item: Type[Any],
        *,
        into: Callable[[list[Any]], Any] = tuple,
        scalar: bool = False,
        non_empty: bool = False,
        null: str = "",
        unique: tuple[str, str] | None = None,
        what: str = "a list",
        doc: str = "",
    ) -> None:
        self.item, self.into, self.scalar, self.non_empty = item, into, scalar, non_empty
        self.null, self.unique, self.what = null, unique, what
        self.doc = doc or f"list of {item.doc}"

    def read(self, value: Any, at: At) -> Any:
        if value is None and self.null:
            at.fail(self.null)
        if value is None and not self.non_empty:
            return self.into([])
        if self.scalar and isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or (self.non_empty and not value):
            at.expected(self.what, value)
        items = []
        seen: dict[Any, int] = {}
        for i, given in enumerate(value):
            item = self.item.read(given, at.child(i))
            if self.unique is not None:
                attribute, message = self.unique
                key = getattr(item, attribute)
                if key in seen:
                    first = at.child(seen[key]).path
                    at.child(i).child(attribute).fail(message.format(value=key, where=first))
                seen[key] = i
            items.append(item)
        return self.into(items)


class Named(Type[dict[str, Any]]):
    """A non-empty mapping of names (institution ids, backend names) to *body*, read in order.

    *publish*: the source remembers the result under that name, for :class:`Ref` keys read later.
    *optional*: null (or the key left out) is an empty mapping."""

    def __init__(self, body: Type[Any], what: str, *, publish: str = "", optional: bool = False, doc: str = "") -> None:
        self.body, self.what_names, self.publish, self.optional = body, what, publish, optional
        self.doc = doc or "mapping"

    def read(self, value: Any, at: At) -> dict[str, Any]:
        if value is None and self.optional:
            result: dict[str, Any] = {}
        else:
            if not isinstance(value, Mapping) or not value:
                at.expected(f"a non-empty mapping of {self.what_names}", value)
            for name in value:
                if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
                    at.expected(f"{self.what_names} to be non-empty strings without '|'", name)
            result = {name: self.body.read(body, at.child(name)) for name, body in value.items()}
        if self.publish:
            at.source.defined[self.publish] = result
        return result


class Ref(Type[Any]):
    """The name of an entry of a table read earlier (``Named(publish=table)``); the name, or with
    *resolve* the entry itself."""

    def __init__(self, table: str, what: str, *, resolve: bool = False, doc: str = "") -> None:
        self.table, self.what, self.resolve = table, what, resolve
        self.doc = doc or f"name under `{table}`"

    def read(self, value: Any, at: At) -> Any:
        table = at.source.defined.get(self.table, {})
        if not isinstance(value, str) or value not in table:
            names = f" ({', '.join(table)})" if table else " (there are none)"
            at.expected(f"{self.what}{names}", value, hint(value, table))
        return table[value] if self.resolve else value


# --------------------------------------------------------------------------------------------------
# Keys and sections


@attrs.frozen
class Key:
    """One key of a section: its type, default, description, and how a reload treats it.

    ``reload`` is declared at the top of the config and in the sections marked ``BY_KEY``; keys
    deeper down follow the nearest declaration above them.
    """

    name: str
    type: Type[Any]
    default: Any = MODEL
    doc: str = ""
    reload: Reload | None = None
    #: The model's attribute, when it is not the key's name.
    attr: str = attrs.field(default=attrs.Factory(lambda self: self.name, takes_self=True))
    #: ``key: null`` means the default (keys whose default is "none").
    nullable: bool = False
    #: The value never appears in an error (a password, a PIN).
    secret: bool = False
    #: Shown when a required key is missing: ``type: sqlite``.
    example: str = ""
    #: Read the key only when this holds for the keys read before it (else it is left at its default).
    when: Callable[[dict[str, Any]], bool] | None = None
    #: The reference's "Type" and "Default" cells, when the type's and the model's are not the words.
    type_doc: str = ""
    default_doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


Check = Callable[[dict[str, Any], Mapping[str, Any], At], None]


class Section(Type[T]):
    """A mapping with declared keys, read into *model* (an attrs class) or a dict.

    *check* runs after the keys with the values (by attribute), the mapping as written and its
    place, for rules that join several keys. *order*: the order the keys are read in, when keys
    refer to others declared after them. *rest*: the type of every undeclared key, gathered into
    the attribute *rest_attr* (else undeclared keys are refused). *name_attr*: the attribute that
    receives the section's own name (an institution's id). *null*: ``key: null`` reads as an empty
    mapping (else the section refuses it).
    """

    def __init__(
        self,
        model: Callable[..., T] | None,
        keys: Sequence[Key],
        *,
        check: Check | None = None,
        order: Sequence[str] = (),
        rest: Type[Any] | None = None,
        rest_attr: str = "",
        name_attr: str = "",
        null: bool = True,
        what: str = "a mapping",
        doc: str = "mapping",
    ) -> None:
        self.model, self.keys, self.check = model, tuple(keys), check
        self.rest, self.rest_attr, self.name_attr, self.null = rest, rest_attr, name_attr, null
        self.what, self.doc = what, doc
        self.names = tuple(key.name for key in self.keys)
        if model is None:
            for key in self.keys:
                if key.default is MODEL:
                    raise TypeError(f"key {key.name} needs a default (REQUIRED or a value): its section has no model")
        by_name = {key.name: key for key in self.keys}
        self._order = tuple(by_name[name] for name in order) if order else self.keys
        self._required = tuple(key for key in self.keys if key.required)
        self._defaults = _model_defaults(model) if isinstance(model, type) and attrs.has(model) else {}
        self._names = frozenset(self.names)
        #: What reading needs of each key, looked up once.
        self._plan = tuple(
            (key, key.name, key.attr, key.type.read, key.nullable, self.default_of(key)) for key in self._order
        )

    def key(self, name: str) -> Key:
        return next(key for key in self.keys if key.name == name)

    def default_of(self, key: Key) -> Any:
        """The value a key left out takes; :data:`MODEL` when the model computes it from others."""
        if key.default is not MODEL:
            return key.default
        return self._defaults.get(key.attr, MODEL)

    def read(self, value: Any, at: At) -> T:
        if value is None and self.null:
            value = {}
        if not isinstance(value, Mapping):
            at.expected(self.what, value)
        source = at.source
        if not self._names.issuperset(value):  # the rare case, spelt out: a key that is not a name, or unknown
            for name in value:
                if not isinstance(name, str):
                    at.expected("string keys", name, " (quote it)")
                if name not in self._names and self.rest is None:
                    raise source.unknown_key(at.child(name), self.names)
        null_is_absent = source.null_is_absent
        for key in self._required:
            if key.name not in value or (null_is_absent and value[key.name] is None):
                raise source.missing(at.child(key.name), key)
        values: dict[str, Any] = {}
        for key, name, attr, read, nullable, default in self._plan:
            given = value.get(name)
            if (given is None and (nullable or null_is_absent or name not in value)) or (
                key.when is not None and not key.when(values)
            ):
                if default is not MODEL:
                    values[attr] = default.factory() if isinstance(default, _Fresh) else default
                continue
            values[attr] = read(given, At(source, at, name, key.secret or at.secret))
        if self.rest is not None:
            values[self.rest_attr] = {
                name: self.rest.read(given, at.child(name)) for name, given in value.items() if name not in self._names
            }
        if self.name_attr:
            values[self.name_attr] = at.key
        if self.check is not None:
            self.check(values, value, at)
        if self.model is None:
            return values  # type: ignore[return-value]
        return self.model(**values)


class _Fresh:
    """A default made anew for each section read (an attrs factory)."""

    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory


def _model_defaults(model: type) -> dict[str, Any]:
    """The attrs defaults a section fills in itself (a factory that needs the instance is left to attrs)."""
    defaults: dict[str, Any] = {}
    for field in attrs.fields(model):
        default = field.default
        if default is attrs.NOTHING:
            continue
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            if not default.takes_self:
                defaults[field.name] = _Fresh(default.factory)
        else:
            defaults[field.name] = default
    return defaults


# --------------------------------------------------------------------------------------------------
# Reload: what the declarations say a reload may apply


def check_reload_declarations(section: Section[Any], path: str = "") -> None:
    """Every key of a section whose keys decide (the top of the config, ``BY_KEY`` sections)
    declares live or restart; raises TypeError naming the first that does not. Run at import, so a
    key added without a declaration stops the tests, never silently goes live."""
    for key in section.keys:
        where = f"{path}.{key.name}" if path else key.name
        if key.reload is None:
            raise TypeError(f"config key {where} declares neither LIVE nor RESTART")
        if key.reload is BY_KEY:
            if not isinstance(key.type, Section):
                raise TypeError(f"config key {where} is BY_KEY but holds no section")
            check_reload_declarations(key.type, where)


def restart_plan(section: Section[Any], old: Any, new: Any, path: str = "") -> tuple[Any, tuple[str, ...]]:
    """The value to run with after a reload from *old* to *new*, and the keys that need a restart.

    A ``LIVE`` key takes the new value; a changed ``RESTART`` key keeps the old one and is named;
    a ``BY_KEY`` section is decided key by key. *new* itself is returned when nothing waits.
    """
    changes: dict[str, Any] = {}
    restart: list[str] = []
    for key in section.keys:
        where = f"{path}.{key.name}" if path else key.name
        before, after = getattr(old, key.attr), getattr(new, key.attr)
        if key.reload is RESTART:
            if before != after:
                restart.append(where)
                changes[key.attr] = before
        elif key.reload is BY_KEY:
            assert isinstance(key.type, Section)
            running, waiting = restart_plan(key.type, before, after, where)
            if waiting:
                restart.extend(waiting)
                changes[key.attr] = running
        elif key.reload is not LIVE:
            raise TypeError(f"config key {where} declares neither LIVE nor RESTART")
    return (attrs.evolve(new, **changes) if changes else new), tuple(restart)


# --------------------------------------------------------------------------------------------------
# A component's options (a backend's mapping in the config)


class Options(Source):
    """The options a component (a backend) is built with, with errors in its own words:
    ``sqlite backend option 'busy_timeout': expected seconds, got true``. null means the default."""

    null_is_absent = True

    def __init__(self, kind: str, name: str, error: Callable[[str], Exception]) -> None:
        super().__init__(f"{kind} backend {name!r}")
        self.kind, self.error_type = kind, error

    def join(self, parent: str, key: str | int) -> str:
        return f"{parent}.{key}" if parent else str(key)

    def error(self, path: str, message: str) -> Exception:
        if path:
            return self.error_type(f"{self.kind} backend option {path!r}: {message}")
        return self.error_type(f"{self.name}: {message}")

    def unknown_key(self, at: At, allowed: Sequence[str]) -> Exception:
        names = [name for name in allowed if name != "type"]  # the factory's, not the backend's
        return self.error_type(
            f"{self.name}: unknown option {at.path!r}{hint(at.key, names)}; expected one of {', '.join(names)}"
        )

    def missing(self, at: At, key: Key) -> Exception:
        example = f", e.g. {key.example}" if key.example else ""
        return self.error_type(f"{self.name}: {at.path!r} is required{example}")

"""Declare an option once; derive the magic's flags, the API's keywords and the defaults.

An options dataclass marks each field with :func:`option`, which records how people
spell it (``--model``), its help, and which ``CCExec`` setting gives its default::

    @dataclass(frozen=True)
    class ClaudeOptions:
        model: str | None = option(None, "--model", help="the Claude model", config="model")

:func:`add_arguments` puts every declared flag on an ``argparse`` parser (the magic's),
:func:`from_values` builds the dataclass from parsed values or keyword arguments, and
:func:`keywords` lists the names the Python API accepts. :class:`OneLineParser` is the
command lines' ``argparse`` parser, whose usage error is one line. :class:`OptionError` is a
bad option whose message each front end spells its own way (the API's keywords, the magic's
flags). Pure: no I/O of its own (argparse prints usage errors and help).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "Flag", "OneLineParser", "OptionError", "abbreviation", "add_arguments", "declared", "from_values", "keywords",
    "option",
]

Kind = Literal["value", "switch", "off", "repeat"]
T = TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True)
class Flag:
    """How one option is spelled for people, and where its default comes from."""

    flags: tuple[str, ...]
    """Magic (and CLI) flags; empty for options of the Python API only."""
    help: str
    metavar: str | None = None
    kind: Kind = "value"
    """value: takes one argument; switch: on when given; off: a ``--no-x`` flag, false when
    given; repeat: may be given many times."""
    type: Callable[[str], Any] | None = None
    config: str | None = None
    """The ``CCExec`` setting that gives the default when the option is not given."""
    extends: bool = False
    """For sequences: the configured items come first and the given ones are added."""

    def argparse_kwargs(self, dest: str) -> dict[str, Any]:
        """Keyword arguments for ``parser.add_argument(*self.flags, ...)``."""
        kwargs: dict[str, Any] = {"dest": dest, "help": self.help}
        if self.kind == "switch":
            kwargs.update(action="store_true", default=None)
        elif self.kind == "off":
            kwargs.update(action="store_false", default=None)
        elif self.kind == "repeat":
            kwargs.update(action="append", default=None, metavar=self.metavar)
        else:
            kwargs.update(metavar=self.metavar, default=None)
        if self.type is not None and self.kind not in ("switch", "off"):
            kwargs["type"] = self.type
        return kwargs


def option(
    default: Any,
    *flags: str,
    help: str,  # shadows the builtin: the argparse name
    metavar: str | None = None,
    kind: Kind = "value",
    type: Callable[[str], Any] | None = None,  # shadows the builtin: the argparse name
    config: str | None = None,
    extends: bool = False,
) -> Any:
    """A dataclass field carrying its :class:`Flag`."""
    spec = Flag(tuple(flags), help, metavar, kind, type, config, extends)
    if isinstance(default, (list, dict, set)):
        raise TypeError("use an immutable default (a tuple) for a declared option")
    return field(default=default, metadata={"flag": spec})


def declared(cls: type) -> list[tuple[Field[Any], Flag]]:
    """The fields of ``cls`` that carry a :class:`Flag`, in declaration order."""
    return [(f, f.metadata["flag"]) for f in fields(cls) if "flag" in f.metadata]


def keywords(cls: type) -> frozenset[str]:
    """The keyword names a dataclass accepts."""
    return frozenset(f.name for f in fields(cls))


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, skip: Collection[str] = (), helps: Mapping[str, str] | None = None,
) -> None:
    """Add every declared flag of ``cls`` but the fields in ``skip`` to ``parser`` (``dest`` is the field name).

    ``helps`` replaces the help of the fields it names: a front end where the declared
    text is not true (no kernel, no ``CCExec``) says what the flag does there.
    """
    for f, spec in declared(cls):
        if spec.flags and f.name not in skip:
            kwargs = spec.argparse_kwargs(f.name)
            if helps and f.name in helps:
                kwargs["help"] = helps[f.name]
            parser.add_argument(*spec.flags, **kwargs)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage error is one line on stderr, exit 2, and that takes
    long options only in full (see :func:`abbreviation`).

    argparse prints the whole usage block first (36 lines for the server), which buries
    the one line that says what is wrong; ``--help`` still shows the block.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")

    def _parse_optional(self, arg_string: str) -> Any:
        refused = abbreviation(self, arg_string)
        if refused is not None:
            self.error(refused)
        return super()._parse_optional(arg_string)


def abbreviation(parser: argparse.ArgumentParser, word: str) -> str | None:
    """Why ``word`` is refused when it is a long option of ``parser`` cut short (``--wa`` for
    ``--wait``), else None. argparse would take a prefix that fits one option: the same word
    then meant another option, or nothing, once an option was added."""
    name = word.partition("=")[0]
    options = parser._option_string_actions
    if not name.startswith("--") or name == "--" or name in options:
        return None
    full = sorted(option for option in options if option.startswith(name))
    if not full:
        return None
    return f"{name} is not an option; options are written in full: {' or '.join(full)}"


class OptionError(ValueError):
    """A bad option value or combination, whose message names options by their field names.

    ``str()`` spells them as the Python API's keywords; :meth:`spelled` as a front end's
    flags. A name may carry the value that matters (``"interactive=False"``): the API shows
    it so, a flag already says it (``--no-interactive``). ``values`` fill the template's
    places after the names (they are never read as a template)::

        OptionError("{0} must be 0 or at least 0.1 s, not {1}", ["idle_timeout"], 0.01)
    """

    def __init__(self, template: str, names: Iterable[str], *values: object) -> None:
        self.template, self.names, self.values = template, tuple(names), values
        super().__init__(self.spelled(str))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied as it was made (a Dask task's error crosses processes).
        return (type(self), (self.template, self.names, *self.values))

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each name spelled by ``spell`` (given the name as raised)."""
        return self.template.format(*(spell(name) for name in self.names), *self.values)


def from_values(
    cls: type[T],
    values: Mapping[str, Any],
    *,
    defaults: Callable[[str], Any] | None = None,
) -> T:
    """Build ``cls`` from ``values``; a missing or None value takes its config default.

    ``defaults(config_name)`` reads a configured default (e.g. from ``CCExec``); the
    field's own default applies when neither gives one. Unknown names raise TypeError.
    """
    unknown = set(values) - keywords(cls)
    if unknown:
        raise TypeError(f"unexpected option {sorted(unknown)[0]!r}")
    given = {k: _coerce(f, values[f.name]) for f in fields(cls) if (k := f.name) in values and values[k] is not None}
    for f, spec in declared(cls):
        configured = defaults(spec.config) if spec.config and defaults is not None else None
        if configured in (None, "", (), []):
            continue
        if f.name not in given:
            given[f.name] = _coerce(f, configured)
        elif spec.extends:
            given[f.name] = (*_coerce(f, configured), *given[f.name])
    return cls(**given)


def _coerce(f: Field[Any], value: Any) -> Any:
    """Sequences become tuples (the dataclasses are frozen and hashable)."""
    is_sequence_default = f.default is not MISSING and isinstance(f.default, tuple)
    if is_sequence_default and isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return tuple(value)
    return value

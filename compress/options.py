"""Options declared once. A dataclass field made with `option(...)` carries its command-line flag,
help, choices and value type beside its default; `add_options` adds the arguments to a parser
from those fields (the default read from the field and said in the help) and `from_args` builds
the dataclass back from the parsed arguments. Change a default in the dataclass and the CLI, its
help and the library change with it.

    @dataclass
    class SweepOptions:
        recalibrate_bn: int = option(4, "--recalibrate-bn", "re-estimate BatchNorm ...", parse=non_negative_int)

    add_options(group, SweepOptions, "recalibrate_bn")      # --recalibrate-bn N ... (default 4)
    opts = from_args(SweepOptions, args)
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from compress.errors import CompressError

_KEY = "compress.option"


def option(default: Any, flag: str, help: str, *, parse: Callable[[str], Any] | None = None,
           choices: tuple[str, ...] | None = None, metavar: str | None = None, default_text: str | None = None,
           from_text: Callable[[Any], Any] | None = None, aliases: tuple[str, ...] = (),
           repeat: bool = False) -> Any:
    """A dataclass field with its command-line form: `parse` reads the text (argparse's `type`),
    `default_text` says the default in words where the value alone does not (None meaning 'depends
    on --kind'), `from_text` turns the parsed value into the field's (a comma-separated list into a
    tuple), `repeat` makes a repeatable option whose values form a tuple. Defaults are immutable
    values (tuples, not lists)."""
    if repeat:
        from_text = from_text or tuple
    meta = dict(flag=flag, help=help, parse=parse, choices=choices, metavar=metavar, default_text=default_text,
                from_text=from_text, aliases=aliases, repeat=repeat)
    return dataclasses.field(default=default, metadata={_KEY: meta})


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if _KEY in f.metadata}


def _as_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def add_options(parser: argparse._ActionsContainer, cls, *names: str, helps: dict[str, str] | None = None) -> None:
    """Add the named fields of `cls` (all its options, in declaration order, without names) to a
    parser or argument group; `helps` replaces a field's help by name, for a command that uses the
    option in its own way (its default is still said)."""
    fields = _fields(cls)
    for name in names or tuple(fields):
        f = fields[name]
        m = f.metadata[_KEY]
        if m["default_text"] is not None:
            said = f" (default {m['default_text']})"
        elif f.default is None or f.default is False or f.default == ():  # nothing to say: absent is off
            said = ""
        else:
            said = f" (default {_as_text(f.default)})"
        text = (helps or {}).get(name, m["help"]) + said
        # an option converted by from_text parses to None when absent: the field keeps its own default
        kwargs = dict(dest=name, default=None if m["from_text"] else f.default, help=text.replace("%", "%%"))
        if m.get("repeat"):
            kwargs.update(action="append", type=argparse_type(m["parse"]), metavar=m["metavar"])
        elif f.default is False and m["parse"] is None:  # a switch, off unless given
            kwargs["action"] = "store_true"
        elif f.default is True and m["parse"] is None:  # on unless --no-NAME
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=argparse_type(m["parse"]), choices=m["choices"], metavar=m["metavar"])
        parser.add_argument(m["flag"], *m["aliases"], **kwargs)


def argparse_type(parse: Callable[[str], Any] | None) -> Callable[[str], Any] | None:
    """`parse` as argparse's `type`: a CompressError it raises (the checks the library runs on the
    same values, one message for CLI and API) becomes argparse's one-line usage error."""
    if parse is None:
        return None

    def checked(text: str):
        try:
            return parse(text)
        except CompressError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    checked.__name__ = getattr(parse, "__name__", "value").removesuffix("_value")
    return checked


def from_args(cls, args: argparse.Namespace, **given: Any):
    """`cls` built from parsed arguments: each option the parser has, converted by its `from_text`,
    the field's default where the option was not given; `given` sets fields itself (it wins over
    an argument of the same name: a value the command derived, e.g. a plan's rounding)."""
    values = dict(given)
    for name, f in _fields(cls).items():
        if name in given or not hasattr(args, name):
            continue
        value = getattr(args, name)
        convert = f.metadata[_KEY]["from_text"]
        if convert is not None:
            if value is None:
                continue
            value = convert(value)
        values[name] = value
    return cls(**values)


def comma_list(text: str) -> tuple[str, ...]:
    """'a, b,c' -> ('a', 'b', 'c')."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def number_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, "
                                         "e.g. 0.5,0.25,0.1") from None


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {v})")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {v})")
    return v


def sparsity(text: str) -> float:
    """A sparsity ratio in [0, 1)."""
    v = number(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"a sparsity ratio must be in [0, 1) (got {v}); e.g. 0.8 for 80%")
    return v

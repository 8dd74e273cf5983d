"""Click options generated from a pydantic model's fields: the CLIs take their defaults, choices, ranges
and help from the models (`TrainingConfig`, `EvaluationConfig`, `TeacherSpec`) instead of retyping them."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo


def _ranged(typ: type, field: FieldInfo) -> click.ParamType | type:
    """`typ` as a click range when the field bounds it (gt/ge/lt/le), else `typ`."""
    if typ not in (int, float):
        return typ
    bounds: dict[str, typing.Any] = {}
    for m in field.metadata:  # pydantic's Gt/Ge/Lt/Le constraints
        for attr, key, is_open in (
            ("gt", "min", True),
            ("ge", "min", False),
            ("lt", "max", True),
            ("le", "max", False),
        ):
            if (v := getattr(m, attr, None)) is not None:
                bounds |= {key: v, f"{key}_open": is_open}
    if not bounds:
        return typ
    return (click.IntRange if typ is int else click.FloatRange)(**bounds)


def field_option(
    model: type[BaseModel],
    name: str,
    flag: str | None = None,
    param: str | None = None,
    help: str | None = None,
    ranged: bool = True,
) -> Callable:
    """A click option for one field: a flag pair for bools, choices for Literals, repeatable for lists,
    a range for bounded numbers (with `ranged`); the field's default and description."""
    field = model.model_fields[name]
    flag = flag or "--" + name.replace("_", "-")
    param = param or name
    text = help or field.description
    ann = field.annotation
    if ann is bool:
        return click.option(
            f"{flag}/--no-{flag[2:]}", param, default=field.default, show_default=True, help=text
        )
    if typing.get_origin(ann) is typing.Literal:
        choice = click.Choice(list(typing.get_args(ann)))
        return click.option(flag, param, type=choice, default=field.default, show_default=True, help=text)
    typ = ann
    if typing.get_origin(ann) in (typing.Union, types.UnionType):  # X | None: X
        typ = [a for a in typing.get_args(ann) if a is not type(None)][0]
    if typing.get_origin(typ) is list:
        return click.option(
            flag, param, multiple=True, default=(), show_default=False, help=f"{text} Repeatable."
        )
    typ = _ranged(typ, field) if ranged else typ
    default = field.default
    return click.option(flag, param, type=typ, default=default, show_default=default is not None, help=text)


def model_options(model: type[BaseModel], names: typing.Iterable[str], **flags: str) -> Callable:
    """Decorate a command with one option per named field, in order; `flags` renames a field's flag."""

    def decorate(func: Callable) -> Callable:
        for name in reversed(list(names)):
            func = field_option(model, name, flag=flags.get(name))(func)
        return func

    return decorate

"""Command-line flags derived from a config dataclass: one source of truth per setting.

Each field declared with `config.setting(default, help, panel)` becomes an option
`--field-name` of its type, in its --help panel. Every such option defaults to None,
"not given", so that the preset, a --config file or a resumed run's settings fill in
what the command line leaves out; the command receives them as keyword arguments.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import fields
from typing import Annotated, Any

import typer


def config_flags(config_cls: type) -> Any:
    """Decorate a typer command `fn(own options..., **settings)` with one option per
    field of config_cls that carries help; they arrive in `settings`."""
    hints = typing.get_type_hints(config_cls)

    def decorate(fn):
        signature = inspect.signature(fn, eval_str=True)  # typer reads these annotations
        own = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        derived = []
        for f in fields(config_cls):
            if "help" not in f.metadata:
                continue
            names = [f.metadata["flags"]] if f.metadata.get("flags") else []
            option = typer.Option(
                *names, help=f.metadata["help"], rich_help_panel=f.metadata["panel"]
            )
            kind = _plain(hints[f.name])
            annotation = Annotated[kind | None, option]
            derived.append(
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
                )
            )
        fn.__signature__ = signature.replace(parameters=[*own, *derived])
        return fn

    return decorate


def _plain(hint: Any) -> type:
    """`str | None` -> str: the option's own type (None already means "not given")."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint

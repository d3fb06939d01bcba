"""Command-line flags derived from a config dataclass: one source of truth per setting.

Each field declared with `config.setting(default, help, panel)` becomes an option
`--field-name` of its type, in its --help panel. Every such option defaults to None,
"not given", so that the preset, a --config file or a resumed run's settings fill in
what the command line leaves out; the command receives them as keyword arguments.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Annotated, Any

import typer

from mlx_gpt.settings import field_type


def config_flags(config_cls: type) -> Any:
    """Decorate a typer command `fn(own options..., **settings)` with one option per
    field of config_cls that carries help; they arrive in `settings`."""

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
            # None is "not given" for every option, whatever the field's own default
            annotation = Annotated[field_type(config_cls, f.name)[0] | None, option]
            derived.append(
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
                )
            )
        # The settings come first, so that --preset leads the first --help panel. Typer
        # passes every option by name, so all of them can be keyword-only.
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        fn.__signature__ = signature.replace(parameters=[*derived, *own])
        return fn

    return decorate

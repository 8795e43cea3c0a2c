"""Settings errors as one line: the key, where its value came from, what to do."""

from __future__ import annotations

import difflib
import os
from typing import TypeGuard, get_args

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from newsletter.config.sections import ENV_PREFIX

# Keys whose values an error never repeats: secrets, and a mailbox URL that may hold one.
_NEVER_REPEATED = ("password", "secret", "mailbox")


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the value at ``loc`` (``smtp.port``: ..._SMTP__PORT)."""
    return ENV_PREFIX + "__".join(str(p) for p in loc if not isinstance(p, int)).upper()


def _variable_behind(loc: tuple[int | str, ...]) -> str | None:
    """The environment variable a value at ``loc`` came from, if one is set (env wins)."""
    set_names = {name.upper(): name for name in os.environ}
    for end in range(len(loc), 0, -1):  # smtp.port, then smtp (a whole section as JSON)
        if isinstance(loc[end - 1], int):
            continue
        name = set_names.get(env_name(loc[:end]))
        if name is not None:
            return name
    return None


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the table holding ``loc`` knows (``[sources]`` for ``sources.seeds_dir``)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        # a table, or a list of tables (``[[sources.feeds]]``)
        inner = [t for t in (annotation, *get_args(annotation)) if _is_model(t)]
        if not inner:
            return []
        model = inner[0]
    return [name for name in model.model_fields if name != "config_path"]


def _is_model(annotation: object) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unknown_key(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    close = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc), n=1, cutoff=0.75)
    guess = f"did you mean {close[0]}? " if close else ""
    return f"unknown key ({guess}the keys are listed in config.example.toml)"


def describe_validation_error(exc: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line naming the first bad key, where its value came from, and what is wrong."""
    error = exc.errors()[0]
    loc = error["loc"]
    key = ".".join(str(part) for part in loc)
    variable = _variable_behind(loc)
    message = error["msg"]
    hint = f"set it in the file or with {env_name(loc)}"
    if error["type"] == "extra_forbidden":
        message = _unknown_key(model, loc)
        hint = "fix or remove it"
    elif error["type"] == "missing":
        message = "required key is missing"
    else:
        message = message.removeprefix("Value error, ")
        if (
            "input" in error
            and not isinstance(error["input"], dict | list)
            and not any(word in key for word in _NEVER_REPEATED)
        ):
            message += f" (got {error['input']!r})"
    extra = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    if variable is not None:
        return f"environment variable {variable}: {key}: {message} [fix or unset it]{extra}"
    return f"{source}: {key}: {message} [{hint}]{extra}"


def describe_unparsable_environment(exc: SettingsError) -> str:
    """pydantic-settings names only the field; name the variables that can have set it."""
    field_name = str(exc).partition('field "')[2].partition('"')[0]
    prefix = env_name((field_name,)) if field_name else ENV_PREFIX
    names = sorted(n for n in os.environ if n.upper().startswith(prefix))
    which = ", ".join(names) or f"a {prefix}* variable"
    return (
        f"environment variable {which}: not a valid value for [{field_name}] (lists and "
        f"tables are JSON, e.g. {ENV_PREFIX}WEB__PREVIOUS_SECRETS='[\"an-old-secret...\"]')"
    )

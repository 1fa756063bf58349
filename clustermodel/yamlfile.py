"""Read a YAML file into a pydantic model, with errors that name the file and the field.

Every problem is one line, ``FILE: field.path: message``, and all of them are
reported at once, so a user fixes a file in one pass.  An unknown key's line
lists the keys accepted there; a YAML syntax error names the line and column.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)

# Passed as pydantic validation context: models that tolerate unknown keys in
# cluster objects (the API server prunes them anyway) reject them in files.
FORBID_UNKNOWN_KEYS = {"unknown_keys": "forbid"}


class YamlFileError(ValueError):
    """One or more problems with a file, each ``FILE: field.path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(self._text())

    def _text(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems:\n" + "\n".join(self.problems)


def read_yaml(path: Path) -> Any:
    """The parsed document (``None`` for an empty file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlFileError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise YamlFileError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = ": ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlFileError([f"{where}: invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise YamlFileError([f"{path}: invalid YAML: {exc}"]) from None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (``X``, ``X | None``, ``list[X]``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    if typing.get_origin(annotation) is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
    return found


def _key(name: str, info: Any) -> str:
    return info.alias or name


def accepted_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str] | None:
    """The keys accepted at ``loc`` (the path to a mapping) below ``model``, as the file spells them."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):  # a list index: stay on the list's item model
            continue
        match = None
        for name, info in current.model_fields.items():
            if part.lower() in (name.lower(), _key(name, info).lower()):
                match = info
                break
        if match is None:
            return None
        models = _models_in(match.annotation)
        current = models[0] if models else None
    if current is None:
        return None
    return [_key(name, info) for name, info in current.model_fields.items()]


def problems(exc: ValidationError, path: Path, model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[str]:
    """One ``FILE: field.path: message`` line per validation error."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        field = ".".join(str(part) for part in (*prefix, *loc)) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            keys = accepted_keys(model, loc[:-1])
            message = "unknown field" + (f"; accepted: {', '.join(keys)}" if keys else "")
        lines.append(f"{path}: {field}: {message}")
    return lines


def validate_document(
    raw: Any, path: Path, model: type[Model], prefix: tuple[str, ...] = (), *, forbid_unknown: bool = True
) -> Model:
    """``raw`` (read from ``path``, found there under ``prefix``) as ``model``; all problems at once."""
    try:
        return model.model_validate(
            raw if raw is not None else {}, context=FORBID_UNKNOWN_KEYS if forbid_unknown else None
        )
    except ValidationError as exc:
        raise YamlFileError(problems(exc, path, model, prefix)) from None


def load_yaml_model(path: Path, model: type[Model]) -> Model:
    return validate_document(read_yaml(path), path, model)

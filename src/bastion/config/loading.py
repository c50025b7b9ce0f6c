"""Loading a configuration: a YAML file, a dict or a :class:`Config`, plus the environment."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bastion._model import Section
from bastion.config.model import Config, ConfigError

ENV_PREFIX = "BASTION_"
# Environment variables that share the prefix but are not configuration keys.
_ENV_NOT_CONFIG = ("BASTION_TEST_", "BASTION_CONFIG")


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(path: tuple[int | str, ...]) -> type[Section] | None:
    """The section model that owns the key at ``path`` (to suggest valid keys)."""
    model: Any = Config
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        candidates = [annotation, *(inner or ())]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, Section)),
            None,
        )
        if model is None:
            inner_lists = [getattr(c, "__args__", ()) for c in candidates]
            model = next(
                (a for args in inner_lists for a in args if isinstance(a, type) and issubclass(a, Section)),
                None,
            )
            if model is None:
                return None
    return model if isinstance(model, type) else None


def _problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        # pydantic adds the validator function's name for before-validators; drop it.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            options = list(owner.model_fields) if owner else []
            reason = "unknown key" + _did_you_mean(str(loc[-1]), options)
            if options:
                reason += f"; valid keys here: {', '.join(options)}"
        else:
            reason = error["msg"].removeprefix("Value error, ")
        problems.append((path, reason))
    return problems


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    overrides: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name.startswith(_ENV_NOT_CONFIG):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            problems.append((name, "empty key segment in the variable name"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        target = overrides
        for part in parts[:-1]:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append((name, f"{part} is set both as a value and as a section"))
                break
            target = node
        else:
            target[parts[-1]] = value
    return overrides, problems


def _named_by_environment(problems: list[tuple[str, str]], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Problems whose key came from an environment variable name that variable too."""
    sources = {
        ".".join(p.lower() for p in name[len(ENV_PREFIX) :].split("__")): name
        for name in env
        if name.startswith(ENV_PREFIX) and not name.startswith(_ENV_NOT_CONFIG)
    }
    named: list[tuple[str, str]] = []
    for path, reason in problems:
        source = next((v for k, v in sources.items() if path == k or path.startswith(k + ".")), None)
        named.append((path, f"{reason} (set by the environment variable {source})" if source else reason))
    return named


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML configuration file into a dictionary, with errors naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([(where, f"not valid YAML: {reason}")], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([("(top level)", "must be a mapping of keys")], str(path))
    return data


def load_config(
    source: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build a :class:`Config` from a file path, a mapping or a ``Config``, plus the environment.

    Relative paths in the file (``openapi``, ``sqlite:///./x.db``) are taken relative
    to the file's folder. ``env`` defaults to ``os.environ``; pass ``{}`` to ignore it.
    """
    environment = os.environ if env is None else env
    origin = "configuration"
    base_dir: Path | None = None
    if isinstance(source, Config):
        data: dict[str, Any] = source.model_dump(mode="json", exclude_unset=True)
    elif source is None:
        data = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        origin = str(path)
        base_dir = path.resolve().parent
        data = read_yaml(path)
    overrides, problems = _env_overrides(environment)
    data = _merge(data, overrides)
    if base_dir is not None:
        data = _resolve_paths(data, base_dir)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_named_by_environment(_problems_from(exc), environment))
        config = None
    if problems or config is None:
        raise ConfigError(problems, origin)
    return config


def _resolve_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    resolved = dict(data)
    spec = resolved.get("openapi")
    if isinstance(spec, str) and not Path(spec).is_absolute():
        resolved["openapi"] = str(base_dir / spec)
    clients = resolved.get("clients")
    keys_file = clients.get("keys_file") if isinstance(clients, dict) else None
    if isinstance(clients, dict) and isinstance(keys_file, str) and not Path(keys_file).is_absolute():
        resolved["clients"] = {**clients, "keys_file": str(base_dir / keys_file)}
    admin = resolved.get("admin")
    token_file = admin.get("token_file") if isinstance(admin, dict) else None
    if isinstance(admin, dict) and isinstance(token_file, str) and not Path(token_file).is_absolute():
        resolved["admin"] = {**admin, "token_file": str(base_dir / token_file)}
    for section in (
        resolved,
        resolved.get("idempotency"),
        resolved.get("rate_limits"),
        resolved.get("admin"),
    ):
        if isinstance(section, dict):
            url = section.get("store")
            if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                section["store"] = "sqlite:///" + str(base_dir / url[len("sqlite:///") :])
    return resolved

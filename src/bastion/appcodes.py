"""The error codes an application defines, for ``bastion errors docs --app module:app``.

Two places define them: :class:`~bastion.problems.Problem` subclasses outside bastion
(found by importing the application), and calls such as
``Conflict(code="ORDER_ALREADY_PAID")`` on a problem class imported from bastion
(found by reading the application package's source with :mod:`ast`, so a code raised
on a path no test takes is listed too). The reference written is ``docs/errors.md``
with these codes added, each marked with where it is defined.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bastion
import bastion.problems
from bastion.errordocs import bastion_codes, render_reference
from bastion.problems import ErrorCode, Problem, error_codes, is_problem_code

#: Source files larger than this are not read (generated code, vendored data).
MAX_SOURCE_BYTES = 2 * 1024 * 1024
#: At most this many source files of the application package are read.
MAX_SOURCE_FILES = 5000


class AppError(ValueError):
    """The ``--app`` target cannot be loaded; the message says why, for the command line."""


@dataclass(frozen=True, slots=True)
class AppCode:
    """One code the application defines, and where."""

    entry: ErrorCode
    #: ``module.Class`` for a subclass, ``path:line`` for each ``code=`` call.
    where: tuple[str, ...]


def load_target(target: str) -> tuple[object, str]:
    """Import ``module:attribute`` (the working directory first on the path): the object and module name."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(f"--app takes module:attribute (for example myapi.main:app), not {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise AppError(
                f"cannot import {module_name!r}: {exc} (run from the folder that holds it)"
            ) from None
        raise AppError(
            f"importing {module_name!r} failed: it needs {missing!r}, which is not installed"
        ) from None
    except Exception as exc:
        raise AppError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AppError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return value, module_name


def _subclasses(cls: type[Problem]) -> Iterator[type[Problem]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def subclass_codes() -> dict[str, AppCode]:
    """The code of every :class:`Problem` subclass defined outside bastion, with its class."""
    found: dict[str, AppCode] = {}
    registered = {entry.code: entry for entry in error_codes()}
    for cls in _subclasses(Problem):
        if cls.__module__.split(".")[0] == "bastion":
            continue
        code = cls.code_default
        entry = registered.get(code)
        if entry is None or entry.module.split(".")[0] == "bastion":
            doc = inspect.getdoc(cls) or ""
            meaning = cls.meaning or doc.partition("\n")[0] or cls.title_default + "."
            entry = ErrorCode(code, cls.status, cls.title_default, meaning, cls.action or "-", cls.__module__)
        where = f"{cls.__module__}.{cls.__qualname__}"
        if code in found:
            where_all = (*found[code].where, where)
            found[code] = AppCode(found[code].entry, where_all)
        else:
            found[code] = AppCode(entry, (where,))
    return found


def package_files(module_name: str) -> list[Path]:
    """The source files of the package ``module_name`` belongs to (its top-level package)."""
    top = module_name.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        files: list[Path] = []
        for folder in spec.submodule_search_locations:
            files.extend(sorted(Path(folder).rglob("*.py")))
        return files[:MAX_SOURCE_FILES]
    return [Path(spec.origin)] if spec.origin and spec.origin.endswith(".py") else []


def _problem_class(name: str) -> type[Problem] | None:
    value = getattr(bastion.problems, name, None)
    return value if isinstance(value, type) and issubclass(value, Problem) else None


class _CallFinder(ast.NodeVisitor):
    """Finds ``Class(code="LITERAL")`` calls on problem classes imported from bastion."""

    def __init__(self) -> None:
        #: Local name -> the bastion problem class it stands for.
        self.classes: dict[str, type[Problem]] = {}
        #: Local names of the modules ``bastion`` and ``bastion.problems``.
        self.modules: set[str] = set()
        self.calls: list[tuple[type[Problem], ast.Call, str]] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in ("bastion", "bastion.problems"):
                self.modules.add(alias.asname or "bastion")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level == 0 and (module == "bastion" or module.startswith("bastion.problems")):
            for alias in node.names:
                cls = _problem_class(alias.name)
                if cls is not None:
                    self.classes[alias.asname or alias.name] = cls
                elif alias.name == "problems" and module == "bastion":
                    self.modules.add(alias.asname or "problems")

    def _resolve(self, func: ast.expr) -> type[Problem] | None:
        if isinstance(func, ast.Name):
            return self.classes.get(func.id)
        if isinstance(func, ast.Attribute):
            owner = ast.unparse(func.value)
            if owner in self.modules or owner.replace(".problems", "") in self.modules:
                return _problem_class(func.attr)
        return None

    def visit_Call(self, node: ast.Call) -> None:
        cls = self._resolve(node.func)
        if cls is not None:
            for keyword in node.keywords:
                value = keyword.value
                if (
                    keyword.arg == "code"
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                    and is_problem_code(value.value)
                ):
                    self.calls.append((cls, node, value.value))
        self.generic_visit(node)


def _literal(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def call_codes(files: list[Path], root: Path) -> dict[str, AppCode]:
    """Codes given as ``code="..."`` to problem classes imported from bastion in ``files``."""
    found: dict[str, AppCode] = {}
    for path in files:
        try:
            if path.stat().st_size > MAX_SOURCE_BYTES:
                continue
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        finder = _CallFinder()
        finder.visit(tree)
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        for cls, call, code in finder.calls:
            where = f"{shown.as_posix()}:{call.lineno}"
            if code in found:
                found[code] = AppCode(found[code].entry, (*found[code].where, where))
                continue
            status = _literal(call, "status")
            title = _literal(call, "title")
            title = title if isinstance(title, str) else cls.title_default
            entry = ErrorCode(
                code,
                status if isinstance(status, int) and 400 <= status <= 599 else cls.status,
                title,
                f"{title}. Raised as `{cls.__name__}` with this code.",
                "-",
                "application",
            )
            found[code] = AppCode(entry, (where,))
    return found


def application_codes(target: str) -> tuple[str, list[AppCode]]:
    """Import ``target`` and collect the codes its application defines that bastion does not."""
    _, module_name = load_target(target)
    ours = {entry.code for entry in bastion_codes()}
    codes = call_codes(package_files(module_name), Path.cwd())
    for code, found in subclass_codes().items():
        if code in codes:
            found = AppCode(found.entry, (*found.where, *codes[code].where))
        codes[code] = found
    listed = [codes[code] for code in codes if code not in ours]
    listed.sort(key=lambda c: (c.entry.status, c.entry.code))
    return module_name, listed


def _source(found: AppCode) -> str:
    return (
        "application: "
        + ", ".join(f"`{where}`" for where in found.where[:5])
        + (f" and {len(found.where) - 5} more" if len(found.where) > 5 else "")
    )


def render_app_reference(target: str) -> str:
    """The error-code reference of bastion and the application ``target`` (``module:attribute``)."""
    module_name, listed = application_codes(target)
    intro = [
        f"The codes a client of `{module_name}` can receive: bastion's own (source `bastion`) and",
        f"those the application defines ({len(listed)}; source `application`, with where). Generated",
        "by `bastion errors docs --app`; regenerate it when the application changes.",
        "",
    ]
    rows = [(entry, "bastion") for entry in bastion_codes()]
    rows += [(found.entry, _source(found)) for found in listed]
    rows.sort(key=lambda row: (row[0].status, row[0].code))
    return render_reference(f"# Error codes of {module_name}", intro, rows)

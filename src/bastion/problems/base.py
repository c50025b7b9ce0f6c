"""The :class:`Problem` exception, the base of every error bastion answers or an application raises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bastion.problems.codes import is_problem_code, register_code, type_uri


class Problem(Exception):
    """An HTTP error rendered as ``application/problem+json``.

    Raise it (or a subclass) from a handler behind :class:`bastion.Bastion`::

        raise NotFound(detail="order 42 does not exist")
        raise Conflict(code="ORDER_ALREADY_PAID", detail="the order was paid at 10:02")

    ``errors`` holds field-level entries, each a mapping with at least ``code`` and
    ``detail``. ``headers`` are added to the response. ``extensions`` become extra
    top-level members of the body.
    """

    status: ClassVar[int] = 500
    code_default: ClassVar[str] = "INTERNAL_ERROR"
    title_default: ClassVar[str] = "Internal server error"
    #: Documentation for the registry; a subclass that sets both registers its code.
    meaning: ClassVar[str] = ""
    action: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "meaning" in cls.__dict__ and "action" in cls.__dict__:
            register_code(
                cls.code_default, cls.status, cls.title_default, cls.meaning, cls.action, cls.__module__
            )

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        title: str | None = None,
        status: int | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code or self.code_default
        if not is_problem_code(self.code):
            raise ValueError(f"problem code {self.code!r} must be UPPER_SNAKE_CASE")
        if status is not None:
            if not 400 <= status <= 599:
                raise ValueError(f"problem status {status} is not an error status")
            self.status = status  # type: ignore[misc]  # per-instance override of the class default
        self.title = title or self.title_default
        self.detail = detail
        self.errors = list(errors) if errors else []
        self.headers = dict(headers) if headers else {}
        self.extensions = dict(extensions) if extensions else {}
        super().__init__(detail or self.title)

    def to_dict(self, *, type_base: str, trace_id: str, instance: str | None) -> dict[str, Any]:
        """The problem body as a dictionary, members in RFC 9457 order."""
        body: dict[str, Any] = {
            "type": type_uri(type_base, self.code),
            "title": self.title,
            "status": self.status,
        }
        if self.detail is not None:
            body["detail"] = self.detail
        if instance is not None:
            body["instance"] = instance
        body["code"] = self.code
        body["trace_id"] = trace_id
        if self.errors:
            body["errors"] = self.errors
        for key, value in self.extensions.items():
            body.setdefault(key, value)
        return body

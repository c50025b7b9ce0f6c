"""The ``business-rules-compile`` rule: every ``x-bastion-rules`` entry compiles and is applied.

The check is the one bastion runs at start-up (:class:`bastion.validation.ruleplan.RulePlans`),
so a description that lints clean here also starts: each rule is a CEL expression
over ``self`` that compiles, gives a boolean and has a cost linear in the body, and
no rule sits under ``oneOf``/``anyOf`` (or another applicator) of a request body.
"""

from __future__ import annotations

from bastion.check.document import Document, iter_operations, pointer_path
from bastion.check.findings import FindingSink
from bastion.validation.openapi import escape_token
from bastion.validation.ruleplan import RulePlans
from bastion.validation.rules import RuleError

RULE_ID = "business-rules-compile"


def check_business_rules(doc: Document, sink: FindingSink) -> None:
    """Report every ``x-bastion-rules`` entry that bastion would refuse at start-up."""
    data = doc.data
    if not sink.enabled(RULE_ID) or not isinstance(data, dict):
        return
    problems: list[RuleError] = []
    plans = RulePlans(data, problems)
    if not plans.rules and not problems:
        return
    for template, method, operation, _ in iter_operations(data.get("paths")):
        at = f"/paths/{escape_token(template)}/{method}/requestBody"
        body = operation.get("requestBody") if isinstance(operation, dict) else None
        if isinstance(body, dict) and isinstance(body.get("$ref"), str):
            found = doc.resolve(body["$ref"])
            body, at = (
                (found[0], "".join("/" + escape_token(str(p)) for p in found[1])) if found else (None, at)
            )
        content = body.get("content") if isinstance(body, dict) else None
        for media, entry in (content or {}).items() if isinstance(content, dict) else ():
            if isinstance(entry, dict) and "schema" in entry:
                try:
                    plans.plan(entry["schema"], f"{at}/content/{escape_token(str(media))}/schema")
                except RuleError as exc:
                    problems.append(exc)
    for problem in problems:
        sink.add(RULE_ID, pointer_path("#" + problem.pointer) or (), problem.reason)

"""The kinds registry: every change kind has its stage in apply's one order table, its apply step, and its lines
for a reviewer; a new kind that forgets one fails here, not at apply time."""

from __future__ import annotations

from reconciler.core.changes import STAGE, STAGES, Change
from reconciler.core.kinds import keys, teams, users  # noqa: F401  (each kind registers its changes by defining them)
from reconciler.service.apply import Applier


def kinds() -> dict[str, type[Change]]:
    found: dict[str, type[Change]] = {}
    todo = [Change]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "kind" in vars(cls):
            found.setdefault(cls.kind, cls)
    return found


def test_every_kind_has_one_stage_an_apply_step_and_its_details():
    found = kinds()
    assert sorted(found) == sorted(STAGE), "STAGES and the change classes disagree"
    assert len(STAGE) == sum(len(stage) for stage in STAGES)  # no kind in two stages
    for kind, cls in found.items():
        if kind != "conflict":  # a conflict is shown, never applied
            assert callable(getattr(Applier, "_" + kind.replace("-", "_"), None)), f"no apply step for {kind}"
        assert cls.details is not Change.details, f"{kind} shows no details"


def test_apply_order_keeps_every_developer_a_key_and_deletes_last():
    def before(a: str, b: str) -> bool:
        return STAGE[a] < STAGE[b]

    assert before("create-user", "create") and before("create-team", "join-team") and before("join-team", "create")
    assert before("create", "update") and before("update", "delete")
    assert before("delete", "leave-team") and before("leave-team", "delete-team") and before("delete", "delete-user")
    assert before("move-file", "create") and before("revoke", "create-user")


def test_the_published_plan_schema_names_every_kind():
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).parent.parent / "schema" / "plan.schema.json").read_text())
    enums = [node["enum"] for node in _walk(schema) if isinstance(node, dict) and "create" in node.get("enum", [])]
    assert enums and all(sorted(e) == sorted(STAGE) for e in enums), "schema/plan.schema.json's kinds disagree"


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)

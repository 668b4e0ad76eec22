"""The docs name what the database has, and the database has nothing public they omit.

docs/ is where the repository states what it promises; these tests keep it
honest: every schema-qualified name a page mentions (`tally.accounts`,
`public.spend_credits`...) exists, every public function, view and table is
on docs/interface.md, and every ledger kind is explained in docs/policy.md.
"""

from __future__ import annotations

import re

import pytest

from tally.paths import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))
# A schema-qualified name; not a path (scripts/tally.py) nor a pattern (tally.typed_<x>).
QUALIFIED = re.compile(r"(?<![/\w.])(public|tally|realtime)\.([a-z_][a-z0-9_]*[a-z0-9])(?![<\w])")


def objects_in(db, schema: str) -> set[str]:
    rows = db.execute(
        "select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %(s)s"
        " union select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = %(s)s"
        " union select t.typname from pg_type t join pg_namespace n on n.oid = t.typnamespace"
        " where n.nspname = %(s)s",
        {"s": schema},
    ).fetchall()
    return {row["name"] for row in rows}


def mentioned(text: str) -> set[tuple[str, str]]:
    return {(schema, name) for schema, name in QUALIFIED.findall(text)}


@pytest.mark.parametrize("page", DOCS, ids=lambda path: path.name)
def test_every_name_a_page_mentions_exists_in_the_database(db, page):
    known = {schema: objects_in(db, schema) for schema in ("public", "tally", "realtime")}
    missing = sorted(
        f"{schema}.{name}"
        for schema, name in mentioned(page.read_text())
        if name not in known[schema]
    )
    assert missing == [], f"{page.name} names what the database does not have: {missing}"


def test_every_public_function_view_and_table_is_on_the_interface_page(db):
    text = (ROOT / "docs" / "interface.md").read_text()
    public = db.execute(
        "select p.proname as name from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public'"
        " union select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'v', 'p')"
    ).fetchall()
    omitted = sorted(
        row["name"]
        for row in public
        if f"`{row['name']}(" not in text and f"`{row['name']}`" not in text
    )
    assert omitted == [], f"docs/interface.md omits public objects: {omitted}"


def test_every_ledger_kind_is_explained_in_the_policy(db):
    definition = db.execute(
        "select pg_get_constraintdef(c.oid) as def from pg_constraint c"
        " where c.contypid = 'tally.ledger_kind'::regtype and c.contype = 'c'"
    ).fetchone()["def"]
    kinds = set(re.findall(r"'([a-z_]+)'::text", definition))
    policy = (ROOT / "docs" / "policy.md").read_text()
    assert kinds and sorted(k for k in kinds if f"`{k}`" not in policy) == []


def test_no_file_of_the_repository_points_outside_it():
    suffixes = {".py", ".md", ".sql", ".toml", ".json", ".yml", ".yaml", ".txt"}
    roots = [ROOT / name for name in ("sidecar", "tally", "tests", "docs", "supabase", "schema",
                                      "scripts", ".ci")]  # fmt: skip
    offenders = sorted(
        str(path.relative_to(ROOT))
        for root in roots
        for path in root.rglob("*")
        if path.is_file()
        and (path.suffix in suffixes or path.name == "run")
        and "corpus" not in path.parts
        and path != ROOT / "tests" / "engine" / "test_docs_match_the_database.py"
        and re.search(r"\.\./shared|\bSPEC\b", path.read_text(errors="replace"))
    )
    offenders += [name for name in ("README.md",) if "../shared" in (ROOT / name).read_text()]
    assert offenders == [], f"files citing what a clone does not have: {offenders}"

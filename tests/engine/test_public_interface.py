"""The public names of docs/interface.md: functions, views and tables exactly as promised.

PostgREST calls functions with named arguments and clients select columns by
name, so names, argument order and types are part of the contract.
"""

from __future__ import annotations

import psycopg
import pytest

FUNCTIONS = {
    "apply_stripe_event": (["event"], ["jsonb"], "jsonb"),
    "apply_stripe_events": (["events"], ["jsonb"], "jsonb"),
    "spend_credits": (
        ["user_id", "amount", "idempotency_key", "reason"],
        ["uuid", "integer", "text", "text"],
        "jsonb",
    ),
    "reverse_spend": (
        ["user_id", "idempotency_key", "reason"],
        ["uuid", "text", "text"],
        "jsonb",
    ),
    "reserve_credits": (
        ["user_id", "amount", "idempotency_key", "ttl_seconds", "reason"],
        ["uuid", "integer", "text", "integer", "text"],
        "jsonb",
    ),
    "commit_hold": (
        ["user_id", "idempotency_key", "amount"],
        ["uuid", "text", "integer"],
        "jsonb",
    ),
    "release_hold": (["user_id", "idempotency_key"], ["uuid", "text"], "jsonb"),
    "adjust_credits": (
        ["user_id", "amount", "reason", "idempotency_key"],
        ["uuid", "integer", "text", "text"],
        "jsonb",
    ),
    "link_stripe_customer": (["user_id", "customer_id"], ["uuid", "text"], "void"),
}

COLUMNS = {
    "credit_balances": {
        "user_id",
        "plan_credits",
        "addon_credits",
        "total_credits",
        "held_credits",
        "available_credits",
        "plan_key",
        "subscription_status",
        "current_period_end",
    },
    "credit_ledger": {
        "user_id",
        "kind",
        "plan_delta",
        "addon_delta",
        "created_at",
        "description",
        "stripe_object_id",
    },
    "plans": {"key", "name", "stripe_price_id", "monthly_credits", "active"},
    "credit_packs": {"key", "name", "stripe_price_id", "credits", "active"},
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_public_function_has_the_contracts_signature(db, name):
    rows = db.execute(
        "select p.proargnames as names, p.pronargs as nargs,"
        " array(select format_type(t, null) from unnest(p.proargtypes) t) as types,"
        " format_type(p.prorettype, null) as returns"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and p.proname = %s",
        (name,),
    ).fetchall()
    assert len(rows) == 1, f"expected one public.{name}, found {len(rows)}"
    (row,) = rows
    names, types, returns = FUNCTIONS[name]
    assert (row["names"][: row["nargs"]], row["types"], row["returns"]) == (names, types, returns)


def test_spend_credits_reason_defaults_to_null(db):
    row = db.execute(
        "select pg_get_function_arguments('public.spend_credits(uuid, integer, text, text)'"
        "::regprocedure) as args"
    ).fetchone()
    assert row["args"].endswith("reason text DEFAULT NULL::text")


@pytest.mark.parametrize("relation", sorted(COLUMNS))
def test_public_relation_has_the_contracts_columns(db, relation):
    rows = db.execute(
        "select column_name from information_schema.columns"
        " where table_schema = 'public' and table_name = %s",
        (relation,),
    ).fetchall()
    assert COLUMNS[relation] <= {row["column_name"] for row in rows}


@pytest.mark.parametrize("relation", ["plans", "credit_packs"])
def test_catalog_price_ids_are_unique(db, relation):
    row = db.execute(f"select * from public.{relation} limit 1").fetchone()
    row["key"] = row["key"] + "_copy"
    columns = ", ".join(row)
    with db.transaction(force_rollback=True), pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(
            f"insert into public.{relation} ({columns}) values ({', '.join(['%s'] * len(row))})",
            list(row.values()),
        )


def test_seed_catalog_has_the_demo_plans_and_packs(db):
    plans = db.execute("select key, stripe_price_id, monthly_credits from public.plans").fetchall()
    packs = db.execute("select key, stripe_price_id, credits from public.credit_packs").fetchall()
    assert {tuple(p.values()) for p in plans} >= {
        ("starter", "price_starter_monthly_fake", 1000),
        ("pro", "price_pro_monthly_fake", 5000),
    }
    assert {tuple(p.values()) for p in packs} >= {
        ("pack_500", "price_pack_500_fake", 500),
        ("pack_2000", "price_pack_2000_fake", 2000),
    }

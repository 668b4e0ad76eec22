"""Config.from_env: every problem named once, secrets kept out of messages and repr."""

from __future__ import annotations

import pytest

from sidecar.config import Config, ConfigError

VALID = {
    "STRIPE_WEBHOOK_SECRETS": "whsec_one,whsec_two",
    "STRIPE_SECRET_KEY": "sk_test_secretvalue",
    "APP_BASE_URL": "https://app.example.com/",
    "DATABASE_URL": "postgresql://postgres:hunter2@db.example.com/postgres",
    "SUPABASE_JWT_SECRET": "jwt-secret-value",
}


def config(**changes: str | None) -> Config:
    env = {**VALID, **changes}
    return Config.from_env({k: v for k, v in env.items() if v is not None})


def problems(**changes: str | None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(**changes)
    return caught.value.problems


def test_reads_a_complete_development_environment():
    cfg = config()
    assert cfg.webhook_secrets == ("whsec_one", "whsec_two")
    assert (cfg.env, cfg.port, cfg.transport) == ("development", 8080, "postgres")
    assert cfg.app_base_url == "https://app.example.com"


def test_builds_redirect_urls_from_app_base_url():
    cfg = config()
    assert cfg.success_url.startswith("https://app.example.com/billing/success")
    assert cfg.cancel_url == "https://app.example.com/billing/cancel"


def test_repr_never_shows_secrets():
    text = repr(config(SUPABASE_SERVICE_ROLE_KEY="service-key-value"))
    for secret in ("whsec_one", "sk_test_secretvalue", "hunter2", "jwt-secret-value"):
        assert secret not in text


def test_reports_every_missing_variable_at_once():
    found = problems(
        STRIPE_WEBHOOK_SECRETS=None, STRIPE_SECRET_KEY=None, APP_BASE_URL=None, DATABASE_URL=None
    )
    assert len(found) == 4
    assert any("STRIPE_WEBHOOK_SECRETS" in p for p in found)
    assert any("DATABASE_URL" in p and "SUPABASE_URL" in p for p in found)


def test_messages_never_contain_secret_values():
    found = problems(STRIPE_WEBHOOK_SECRETS="whsec_ok,notasecret", STRIPE_SECRET_KEY="pk_live_x")
    text = "\n".join(found)
    assert "notasecret" not in text and "pk_live_x" not in text
    assert "entry 2" in text


def test_production_refuses_plain_http_app_base_url():
    assert problems(ENV="production", APP_BASE_URL="http://app.example.com") == [
        "APP_BASE_URL must use https in production"
    ]


@pytest.mark.parametrize(
    "url",
    ["https://localhost:3000", "https://127.0.0.1", "https://[::1]:8443", "https://app.localhost"],
)
def test_production_refuses_localhost_app_base_url(url):
    assert problems(ENV="production", APP_BASE_URL=url) == [
        "APP_BASE_URL points at this machine; not allowed in production"
    ]


def test_development_accepts_localhost_app_base_url():
    assert config(APP_BASE_URL="http://localhost:3000").app_base_url == "http://localhost:3000"


def test_rejects_unknown_env():
    assert problems(ENV="staging") == ["ENV must be 'development' or 'production'"]


@pytest.mark.parametrize("port", ["http", "0", "70000"])
def test_rejects_a_bad_port(port):
    assert len(problems(PORT=port)) == 1


def test_chooses_postgrest_when_only_supabase_is_configured():
    cfg = config(
        DATABASE_URL=None,
        SUPABASE_URL="https://abc.supabase.co",
        SUPABASE_SERVICE_ROLE_KEY="service-key",
    )
    assert cfg.transport == "postgrest"
    assert cfg.jwks_url == "https://abc.supabase.co/auth/v1/.well-known/jwks.json"


def test_needs_both_supabase_url_and_service_role_key():
    found = problems(DATABASE_URL=None, SUPABASE_URL="https://abc.supabase.co")
    assert found == ["SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are both needed for PostgREST"]


def test_needs_a_way_to_verify_user_tokens():
    assert problems(SUPABASE_JWT_SECRET=None) == [
        "no way to verify user tokens: set SUPABASE_JWT_SECRET or SUPABASE_URL (JWKS)"
    ]


def test_production_refuses_a_stripe_stand_in():
    found = problems(ENV="production", STRIPE_API_BASE="http://127.0.0.1:12111")
    assert found == ["STRIPE_API_BASE (a Stripe stand-in) is not allowed in production"]

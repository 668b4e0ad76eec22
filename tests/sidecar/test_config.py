"""Config.from_env: every problem named once, secrets kept out of messages and repr."""

from __future__ import annotations

import re

import pytest

from sidecar.config import Config, ConfigError, is_local_host
from tally.paths import ROOT

VALID = {
    "STRIPE_WEBHOOK_SECRETS": "whsec_one,whsec_two",
    "STRIPE_SECRET_KEY": "sk_test_secretvalue",
    "APP_BASE_URL": "https://app.example.com/",
    "DATABASE_URL": "postgresql://postgres:hunter2@db.example.com/postgres",
    "SUPABASE_JWT_SECRET": "jwt-secret-value",
}


# What a real production deployment looks like (fly.toml sets ENV and METRICS_PORT).
PRODUCTION = {
    **VALID,
    "ENV": "production",
    "STRIPE_WEBHOOK_SECRETS": "whsec_" + "a1B2c3D4" * 4,
    "STRIPE_SECRET_KEY": "sk_live_" + "x" * 24,
    "SUPABASE_JWT_SECRET": "j" * 40,
    "METRICS_PORT": "9091",
}


def config(base: dict[str, str] = VALID, **changes: str | None) -> Config:
    env = {**base, **changes}
    return Config.from_env({k: v for k, v in env.items() if v is not None})


def problems(base: dict[str, str] = VALID, **changes: str | None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(base, **changes)
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
    assert problems(PRODUCTION, APP_BASE_URL="http://app.example.com") == [
        "APP_BASE_URL must use https in production"
    ]


@pytest.mark.parametrize(
    "url",
    ["https://localhost:3000", "https://127.0.0.1", "https://[::1]:8443", "https://app.localhost"],
)
def test_production_refuses_localhost_app_base_url(url):
    assert problems(PRODUCTION, APP_BASE_URL=url) == [
        "APP_BASE_URL points at this machine; not allowed in production"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.1",
        "https://0x7f000001",
        "https://2130706433",
        "https://0177.0.0.1",
        "https://127.0.0.1./",
        "https://[::ffff:127.0.0.1]",
        "https://0.0.0.0",
        "https://[::]",
        "https://LOCALHOST.",
        "https://app.localhost.",
        "https://%31%32%37.0.0.1",
    ],
)
def test_production_refuses_every_spelling_a_browser_opens_as_this_machine(url):
    assert problems(PRODUCTION, APP_BASE_URL=url) == [
        "APP_BASE_URL points at this machine; not allowed in production"
    ]


@pytest.mark.parametrize(
    "host", ["app.example.com", "10.0.0.1", "8.8.8.8", "1.2.3.4.5", "example.0", "256.1", "1e2"]
)
def test_other_hosts_and_numbers_are_not_taken_for_this_machine(host):
    assert not is_local_host(host)


def test_development_accepts_localhost_app_base_url():
    assert config(APP_BASE_URL="http://localhost:3000").app_base_url == "http://localhost:3000"


def test_rejects_unknown_env():
    assert problems(ENV="staging") == ["ENV must be 'development' or 'production'"]


def test_group_commit_defaults_and_more_apply_workers_than_connections_is_refused():
    defaults = config()
    assert (defaults.apply_workers, defaults.apply_batch_max) == (2, 8)
    assert problems(APPLY_WORKERS="12", DB_POOL_SIZE="10") == [
        "APPLY_WORKERS must not exceed DB_POOL_SIZE"
    ]
    assert len(problems(APPLY_BATCH_MAX="0")) == 1


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
    found = problems(PRODUCTION, STRIPE_API_BASE="http://127.0.0.1:12111")
    assert found == ["STRIPE_API_BASE (a Stripe stand-in) is not allowed in production"]


# -- production refuses what only fits a laptop ---------------------------------------------


def test_a_complete_production_environment_starts():
    assert config(PRODUCTION).env == "production"


@pytest.mark.parametrize(
    ("name", "placeholder"),
    [
        ("STRIPE_WEBHOOK_SECRETS", "whsec_replace_me_replace_me_replace_me"),
        ("STRIPE_SECRET_KEY", "sk_test_replace_me"),
        ("SUPABASE_JWT_SECRET", "replace_me" * 4),
        ("SUPABASE_SERVICE_ROLE_KEY", "replace_me"),
        ("METRICS_TOKEN", "replace_me" * 4),
    ],
)
def test_production_refuses_placeholders_of_env_example(name, placeholder):
    assert f"{name} is a placeholder from .env.example" in problems(
        PRODUCTION, **{name: placeholder}
    )


def test_development_accepts_placeholders():
    assert config(STRIPE_SECRET_KEY="sk_test_replace_me").env == "development"


def test_production_refuses_a_short_webhook_secret_by_position():
    found = problems(PRODUCTION, STRIPE_WEBHOOK_SECRETS="whsec_" + "k" * 40 + ",whsec_short")
    assert found == [
        "STRIPE_WEBHOOK_SECRETS entry 2 is too short for a signing secret"
        " (whsec_ and at least 32 characters)"
    ]


def test_production_refuses_an_hs256_secret_under_32_bytes():
    assert problems(PRODUCTION, SUPABASE_JWT_SECRET="x" * 31) == [
        "SUPABASE_JWT_SECRET is shorter than 32 bytes"
    ]


def test_production_needs_metrics_protected():
    assert problems(PRODUCTION, METRICS_PORT=None) == [
        "set METRICS_TOKEN or METRICS_PORT: production never serves /metrics openly"
    ]
    assert config(PRODUCTION, METRICS_PORT=None, METRICS_TOKEN="t" * 32).metrics_token


def test_production_reports_every_problem_at_once_without_values():
    found = problems(
        PRODUCTION,
        STRIPE_WEBHOOK_SECRETS="whsec_replace_me",
        SUPABASE_JWT_SECRET="replace_me",
        METRICS_PORT=None,
    )
    assert len(found) == 5, found  # two placeholders, a short secret, a short key, metrics
    assert not any("whsec_replace_me" in line for line in found)


def test_a_test_mode_key_in_production_is_a_warning_not_a_refusal():
    cfg = config(PRODUCTION, STRIPE_SECRET_KEY="sk_test_" + "x" * 24)
    assert cfg.warnings == ["STRIPE_SECRET_KEY is a test-mode key in production"]
    assert config(PRODUCTION).warnings == []


# -- settings for features wired elsewhere ---------------------------------------------------


def test_defaults_of_the_optional_settings():
    cfg = config()
    assert (cfg.replay_interval, cfg.body_timeout) == (600, 10.0)
    assert (cfg.billing_rate_limit, cfg.billing_rate_window) == (10, 60)
    assert (cfg.metrics_token, cfg.metrics_port, cfg.app_webhook_url) == (None, None, None)


def test_reads_the_optional_settings():
    cfg = config(
        REPLAY_INTERVAL="0",
        BODY_TIMEOUT="2.5",
        BILLING_RATE_LIMIT="3",
        BILLING_RATE_WINDOW="10",
        METRICS_PORT="9091",
        APP_WEBHOOK_URL="https://backend.example.com/hooks",
        APP_WEBHOOK_SECRET="whsec_c2VjcmV0LWtleS1ieXRlcw==",
    )
    assert (cfg.replay_interval, cfg.body_timeout, cfg.metrics_port) == (0, 2.5, 9091)
    assert (cfg.billing_rate_limit, cfg.billing_rate_window) == (3, 10)
    assert cfg.app_webhook_url == "https://backend.example.com/hooks"


def test_app_webhook_url_and_secret_come_together():
    assert problems(APP_WEBHOOK_URL="https://backend.example.com/hooks") == [
        "APP_WEBHOOK_URL and APP_WEBHOOK_SECRET are needed together"
    ]


def test_app_webhook_secret_is_whsec_and_base64():
    found = problems(APP_WEBHOOK_URL="https://b.example.com/h", APP_WEBHOOK_SECRET="whsec_not!b64")
    assert found == ["APP_WEBHOOK_SECRET must be whsec_ followed by base64"]


def test_production_app_webhook_url_must_be_https_and_not_local():
    secret = "whsec_c2VjcmV0LWtleS1ieXRlcw=="
    assert problems(
        PRODUCTION, APP_WEBHOOK_URL="http://b.example.com/h", APP_WEBHOOK_SECRET=secret
    ) == ["APP_WEBHOOK_URL must use https in production"]
    assert problems(
        PRODUCTION, APP_WEBHOOK_URL="https://localhost/h", APP_WEBHOOK_SECRET=secret
    ) == ["APP_WEBHOOK_URL points at this machine; not allowed in production"]


@pytest.mark.parametrize(
    "change",
    [{"REPLAY_INTERVAL": "-1"}, {"BODY_TIMEOUT": "0"}, {"BILLING_RATE_LIMIT": "0"},
     {"METRICS_PORT": "8080"}, {"STRIPE_PORTAL_CONFIGURATION": "portal"}],
)  # fmt: skip
def test_rejects_out_of_range_settings(change):
    assert len(problems(**change)) == 1


def test_repr_never_shows_the_new_secrets():
    text = repr(
        config(
            METRICS_TOKEN="metrics-token-value",
            APP_WEBHOOK_URL="https://b.example.com/h",
            APP_WEBHOOK_SECRET="whsec_c2VjcmV0LWtleS1ieXRlcw==",
        )
    )
    assert "metrics-token-value" not in text and "c2VjcmV0" not in text


def test_every_variable_the_sidecar_reads_is_described_in_env_example_and_no_other():
    # .env.example is the one list of the sidecar's environment; the docs point to it.
    source = (ROOT / "sidecar" / "config.py").read_text()
    read = set(re.findall(r'self\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))
    example = (ROOT / ".env.example").read_text()
    described = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M))
    assert read and read == described, (sorted(read - described), sorted(described - read))

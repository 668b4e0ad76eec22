"""The sidecar fixtures of tests/sidecar, for the corpus replay."""

from tests.sidecar.conftest import fake_stripe, make_sidecar, sidecar, stripe_base  # noqa: F401

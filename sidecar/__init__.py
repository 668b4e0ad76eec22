"""tally's Stripe sidecar: verified webhooks into typed events, Checkout and Portal sessions."""

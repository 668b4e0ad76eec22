"""Chaos simulation: the credit policy model, coherent Stripe streams, delivery."""

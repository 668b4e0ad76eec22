"""tally's command line: demo, tests, development stack, operator jobs, Stripe set-up."""

"""Bringing the site up: `make run`'s launcher, the private PostgreSQL cluster, the pre-start
step (migrate, then seed in dev) that production runs too, and the demo seed."""

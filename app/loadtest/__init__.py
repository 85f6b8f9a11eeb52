"""Load testing: drive many concurrent dashboard sessions against a running site, as browsers do.

`python -m app.loadtest accounts --count N` creates the load-test accounts;
`python -m app.loadtest --url URL` runs the load and reports time-to-chart (see README).
"""

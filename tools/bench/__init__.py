"""The benchmark: Pocket's speed, each figure beside a baseline from the same run.

Run it from a checkout with `make bench` (or `.venv/bin/python -m tools.bench`).
It measures the embedded SQLite and PostgreSQL, on databases it creates and
removes. Sizes are parameters; the defaults finish in a few minutes on two
cores. A figure is only meaningful beside its baseline: machines differ, and a
shared machine differs from minute to minute.

One module per job: figures.py (sizes and results), run.py (a run, backend by
backend), baselines.py (the database alone), commands.py (the Python API),
http_load.py (HTTP) with wrk.py (the load), servers.py (every process measured),
http_figures.py (a run's figures), http_baselines.py with baseline_apps.py (a bare
Flask app and the library's shape on the same server) and deployments.py (the
follower in the server or beside it), live.py with watch.py (the follower live),
projection.py (catch-up and rebuild), history.py with cold.py (long histories),
report.py (the table), __main__.py (the command line).
"""

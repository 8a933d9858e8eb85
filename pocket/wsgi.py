"""Pocket's HTTP API as a WSGI application, for a WSGI server of one's own choosing.

`pocket serve` is the way to run Pocket: waitress, with the limits that keep slow
clients from taking the API down (see server.py), and the follower in the same
process unless told otherwise. This factory builds the same Flask app, without a
follower (run `pocket follow` beside it), for other servers: the benchmark
(`make bench`) measures one against waitress, and a deployment behind a proxy
that enforces client limits itself may run one: deploy/nginx.conf in front of
granian (docs/deployment.md, "Behind nginx, on granian (faster)"). At its
simplest, with granian:

    POCKET_DATABASE_URL=... granian --interface wsgi --factory pocket.wsgi:app

The service is closed when the process exits.
"""

from __future__ import annotations

import atexit

from flask import Flask

from pocket import logs
from pocket.bootstrap import bootstrap
from pocket.config import LogSettings, Settings
from pocket.preflight import check_database
from pocket.web import create_app


def app() -> Flask:
    """The API over a service built from the environment (POCKET_DATABASE_URL
    and the rest, as `pocket serve` reads them), with no follower."""
    log_settings = LogSettings.from_environ()
    logs.configure(log_settings.level, log_settings.format)
    settings = Settings.from_environ()
    # As `pocket serve` does first: PostgreSQL's own reason for a refusal, and
    # no start through a pooler that shares server processes (pocket.pooling).
    check_database(settings)
    service = bootstrap(settings, follow=False)
    atexit.register(service.close)
    return create_app(service)

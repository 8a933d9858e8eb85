"""The apps Pocket's HTTP figures are printed beside, each served by pocket
serve's own server (pocket.server.build_server with its default Limits) in a
process of its own, so that the difference is Pocket's and not the server's:

- flask: a bare Flask app, GET /health answering a small JSON body, as Pocket's
  does, and nothing else;
- library: the eventsourcing library's documented shape behind Flask, what a
  team would write first (as the library's bank accounts example does): an
  Application, one aggregate, and a route that gets it from the repository,
  calls a method and saves it, one save per request. Storage is chosen by the
  environment alone (PERSISTENCE_MODULE and the library's POSTGRES_ variables).

    python -m tools.bench.baseline_apps {flask,library} --port N --threads N
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError
from flask import Flask, request

from pocket.server import Limits, build_server

# Two requests for one account at once: the second save conflicts on the
# aggregate's version, and the command is run again on the account as stored.
CONFLICT_ATTEMPTS = 10


class Account(Aggregate):
    """A balance that deposits add to."""

    @event("Opened")
    def __init__(self) -> None:
        self.balance = Decimal(0)

    @event("Deposited")
    def deposit(self, amount: Decimal) -> None:
        """Adds money to the balance."""
        self.balance += amount


class Accounts(Application[UUID]):
    """Opens accounts and deposits into them: get, call, save."""

    def open_account(self) -> UUID:
        """A new, empty account; its id."""
        account = Account()
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: Decimal) -> Decimal:
        """Adds money to an account; its new balance. Run again on a conflict:
        without that, some answers would be 500s, and no figure."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                account: Account = self.repository.get(account_id)
                account.deposit(amount)
                self.save(account)
            except IntegrityError:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
            else:
                return account.balance
        raise AssertionError  # pragma: no cover

    def balance(self, account_id: UUID) -> Decimal:
        """An account's balance."""
        account: Account = self.repository.get(account_id)
        return account.balance


def flask_app() -> Flask:
    """A bare Flask app: GET /health only."""
    app = Flask(__name__)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def library_app(accounts: Accounts) -> Flask:
    """The bare app, and POST /accounts/<id>/deposit with {"amount": "1.00"}."""
    app = flask_app()

    @app.post("/accounts/<uuid:account_id>/deposit")
    def deposit(account_id: UUID) -> dict[str, str]:
        body = request.get_json()
        balance = accounts.deposit(account_id, Decimal(body["amount"]))
        return {"balance": str(balance)}

    return app


def main(argv: list[str] | None = None) -> int:
    """Serves one of the apps until the process is terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=["flask", "library"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    app = flask_app() if args.app == "flask" else library_app(Accounts())
    build_server(app, "127.0.0.1", args.port, args.threads, Limits()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The OpenAPI 3.1 document of Pocket's HTTP API, served at GET /openapi.json.

Assembled from what is declared once elsewhere: each route's operation and its
parameters (pocket.web.spec, on the view), the request bodies from the
declarations the views read them with (`Body`), the error responses from the
catalogue of errors. Written here: the schemas of the answers and the tags. The
tests check it against the routes and run generated requests against the live app.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from flask import Flask
from werkzeug.routing import Rule

from pocket import __version__
from pocket.web.auth import IDEMPOTENCY_KEY, REQUEST_ID
from pocket.web.body import Body, Schema
from pocket.web.errors import catalogue
from pocket.web.spec import HOLD_ID, JSON, USER_ID, WEBHOOK_ID, Operation, Param

# The path parameters, in the order they come in a path.
PATH_PARAMS = (USER_ID, HOLD_ID, WEBHOOK_ID)

MONEY_OUT: Schema = {
    "type": "string",
    "pattern": r"^[0-9]+\.[0-9]{2}$",
    "description": "Money, with exactly two decimal places.",
    "examples": ["15.00"],
}
# A balance, and what a wallet may spend, go below zero only as far as a credit
# limit lets them.
SIGNED_MONEY: Schema = {
    **MONEY_OUT,
    "pattern": r"^-?[0-9]+\.[0-9]{2}$",
    "description": (
        "Money, with exactly two decimal places; below zero only as far as the "
        "wallet's credit limit lets it."
    ),
}
TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
UUID_STRING: Schema = {"type": "string", "format": "uuid"}
USER_ID_OUT: Schema = {
    "type": "integer",
    "minimum": 1,
    "description": "A user's id, as in User.id.",
}


def ref(name: str) -> Schema:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], optional: tuple[str, ...] = ()) -> Schema:
    """A closed object schema: exactly these properties, all but optional required."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


# What a wallet may spend, shown with it wherever the API shows a wallet.
WALLET_SPENDING: dict[str, Schema] = {
    "held": {**MONEY_OUT, "description": "What the open holds reserve."},
    "available": {
        **SIGNED_MONEY,
        "description": "What it may spend: the balance, less held, plus the credit "
        "limit.",
    },
    "credit_limit": {
        **MONEY_OUT,
        "description": "How far below zero it may go (0.00: not at all).",
    },
    "daily_limit": {
        "oneOf": [MONEY_OUT, {"type": "null"}],
        "description": "What it may spend in a UTC day, holds included; null: "
        "no limit.",
    },
    "alert_below": {
        "oneOf": [MONEY_OUT, {"type": "null"}],
        "description": "Below this available amount, the change feed sends a "
        "balance.low event (docs/webhooks.md); null: none.",
    },
}
HOLD_STATUS: Schema = {"enum": ["open", "captured", "voided", "expired"]}
COUNTERPARTY: Schema = {
    "type": "object",
    "properties": {"user_id": USER_ID_OUT, "wallet_id": UUID_STRING},
    "required": ["user_id", "wallet_id"],
    "additionalProperties": False,
}


def nullable(schema: Schema, description: str) -> Schema:
    """A schema that also takes null, said what it is."""
    return {"oneOf": [schema, {"type": "null"}], "description": description}


HOLD: dict[str, Schema] = {
    "id": UUID_STRING,
    "status": {
        **HOLD_STATUS,
        "description": "expired as soon as its expiry passes, recorded or not.",
    },
    "amount": {**MONEY_OUT, "description": "What it holds."},
    "expires_at": TIMESTAMP,
    "destination": nullable(
        {"type": "string"}, "Where it goes outside Pocket; null for a user."
    ),
    "counterparty": nullable(COUNTERPARTY, "The user it is for; null otherwise."),
    "description": {"type": "string"},
    "placed_on": TIMESTAMP,
    "captured": nullable(MONEY_OUT, "What a capture took."),
    "released": nullable(MONEY_OUT, "What went back to the wallet as it ended."),
    "ended_on": nullable(
        TIMESTAMP, "When it ended; null while open, or expired but not recorded."
    ),
    "transfer_id": nullable(
        UUID_STRING, "The transfer a capture for a user made; null otherwise."
    ),
}

SECONDS: Schema = {"type": "number", "description": "Unix seconds."}
WEBHOOK: dict[str, Schema] = {
    "id": UUID_STRING,
    "url": {"type": "string"},
    "events": {"type": "array", "items": {"type": "string"}},
    "user_id": nullable(USER_ID_OUT, "Only this user's wallet; null: every one."),
    "alert_below": nullable(MONEY_OUT, "The balance.low threshold; null: none."),
    "description": {"type": "string"},
    "created_at": SECONDS,
    "start_position": {"type": "integer", "minimum": 0},
    "position": {
        "type": "integer",
        "minimum": 0,
        "description": "Every event up to here is delivered or parked.",
    },
    "lag": {"type": "integer", "minimum": 0},
    "pending": {"type": "integer", "minimum": 0},
    "parked": {"type": "integer", "minimum": 0},
    "last_delivered_at": nullable(SECONDS, "The last delivery a receiver took."),
    "last_error": nullable({"type": "string"}, "The last failure, as it was."),
    "last_error_at": nullable(SECONDS, "When it was."),
    "replay": nullable(
        obj(
            {
                "after": {"type": "integer", "minimum": 0},
                "until": {"type": "integer", "minimum": 0},
            }
        ),
        "A replay under way: queued after this position, up to until.",
    ),
}
DELIVERY: Schema = obj(
    {
        "id": {"type": "integer"},
        "event_id": UUID_STRING,
        "event_type": {"type": "string"},
        "position": {"type": "integer"},
        "wallet_id": UUID_STRING,
        "status": {"enum": ["pending", "delivered", "parked"]},
        "attempts": {"type": "integer", "minimum": 0},
        "created_at": SECONDS,
        "next_attempt_at": nullable(SECONDS, "The next try, while pending."),
        "last_attempt_at": nullable(SECONDS, "The last try."),
        "last_error": nullable({"type": "string"}, "Why the last try failed."),
        "delivered_at": nullable(SECONDS, "When a receiver took it."),
        "event": {"type": "object", "description": "The body sent."},
    }
)

SCHEMAS: dict[str, Schema] = {
    "User": obj(
        {
            "id": {"type": "integer", "minimum": 1},
            "name": {"type": "string"},
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        }
    ),
    "Wallet": obj(
        {
            "aggregate_id": UUID_STRING,
            "user_id": USER_ID_OUT,
            "balance": SIGNED_MONEY,
            "version": {"type": "integer", "minimum": 1},
            "closed": {"type": "boolean"},
            **WALLET_SPENDING,
        }
    ),
    "WalletAsOf": obj(
        {
            "aggregate_id": UUID_STRING,
            "user_id": USER_ID_OUT,
            "balance": SIGNED_MONEY,
            "version": {"type": "integer", "minimum": 1},
            "closed": {"type": "boolean"},
            **WALLET_SPENDING,
            "as_of": TIMESTAMP,
        }
    ),
    "ProjectedWallet": {
        "description": "The wallet as the wallet_records projection has it (may lag).",
        "oneOf": [
            obj(
                {
                    "aggregate_id": UUID_STRING,
                    "user_id": USER_ID_OUT,
                    "balance": MONEY_OUT,
                    "version": {"type": "integer", "minimum": 1},
                    "closed": {
                        "type": "boolean",
                        "description": "From version 2 of wallet_records on.",
                    },
                    "held": {
                        **MONEY_OUT,
                        "description": "From version 3 on: what the holds the "
                        "log has not seen end reserve.",
                    },
                    "available": {
                        **MONEY_OUT,
                        # Below zero once a lowered credit limit, or a hold past
                        # its expiry not yet recorded, leaves less than nothing.
                        "pattern": r"^-?[0-9]+\.[0-9]{2}$",
                        "description": "From version 3 on: balance - held + "
                        "credit limit.",
                    },
                },
                optional=("closed", "held", "available"),
            ),
            {"type": "null"},
        ],
    },
    "Account": obj({"user": ref("User"), "wallet": ref("Wallet")}),
    "AccountAsOf": obj({"user": ref("User"), "wallet": ref("WalletAsOf")}),
    "NewAccount": obj(
        {
            "user": ref("User"),
            "wallet": ref("Wallet"),
            "token": {
                "type": "string",
                "description": "The user's API token. It is shown only this once.",
            },
        }
    ),
    "AccountPage": obj(
        {
            "users": {
                "type": "array",
                "items": obj({"user": ref("User"), "wallet": ref("ProjectedWallet")}),
            },
            "next": {"type": ["string", "null"]},
        }
    ),
    "Token": obj({"token": {"type": "string"}}),
    "Transaction": obj(
        {
            "id": {
                "type": "integer",
                "description": "The entry's position in the wallet's history.",
            },
            "type": {
                "enum": ["IN", "OUT", "HOLD", "RELEASE"],
                "description": (
                    "IN, OUT: money came in, went out (a hold's capture too); "
                    "HOLD: a hold was placed (nothing moved); RELEASE: a hold "
                    "ended with nothing taken."
                ),
            },
            "amount": MONEY_OUT,
            "balance": {**SIGNED_MONEY, "description": "The balance after this entry."},
            "date": TIMESTAMP,
            "source": {"type": "string"},
            "destination": {"type": "string"},
            "transfer_id": UUID_STRING,
            "counterparty": obj({"user_id": USER_ID_OUT, "wallet_id": UUID_STRING}),
            "description": {"type": "string"},
            "hold_id": UUID_STRING,
            "expires_at": {**TIMESTAMP, "description": "A HOLD's expiry."},
            "outcome": {
                "enum": ["captured", "voided", "expired"],
                "description": "How a hold ended (its OUT or RELEASE entry).",
            },
            "released": {
                **MONEY_OUT,
                "description": "What a capture of less than the hold released.",
            },
            "actor": {
                "type": ["string", "null"],
                "description": "Who caused it: user:<id>, admin or system.",
            },
            "correlation_id": {
                "type": ["string", "null"],
                "description": "The X-Request-Id of the request that caused it.",
            },
        },
        optional=(
            "source",
            "destination",
            "transfer_id",
            "counterparty",
            "description",
            "hold_id",
            "expires_at",
            "outcome",
            "released",
        ),
    ),
    "TransactionPage": obj(
        {
            "balance": SIGNED_MONEY,
            "transactions": {"type": "array", "items": ref("Transaction")},
            "next": {
                "type": ["string", "null"],
                "description": (
                    "Pass as ?after= (with the same order) for the next page; "
                    "null at the end."
                ),
            },
        }
    ),
    "Transfer": obj(
        {
            "id": UUID_STRING,
            "from_user_id": USER_ID_OUT,
            "to_user_id": USER_ID_OUT,
            "amount": MONEY_OUT,
            "description": {"type": "string"},
            "date": TIMESTAMP,
        }
    ),
    "TransferResult": obj(
        {"user": ref("User"), "wallet": ref("Wallet"), "transfer": ref("Transfer")}
    ),
    "Hold": obj(HOLD),
    "HoldResult": obj(
        {**HOLD, "wallet": {**ref("Wallet"), "description": "The owner's wallet."}}
    ),
    "HoldList": obj({"holds": {"type": "array", "items": ref("Hold")}}),
    "Webhook": obj(WEBHOOK),
    "NewWebhook": obj(
        {
            "webhook": obj(
                {
                    **WEBHOOK,
                    "secret": {
                        "type": "string",
                        "description": "Signs the deliveries; shown only here.",
                    },
                }
            )
        }
    ),
    "WebhookResult": obj({"webhook": ref("Webhook")}),
    "WebhookList": obj({"webhooks": {"type": "array", "items": ref("Webhook")}}),
    "DeliveryList": obj({"deliveries": {"type": "array", "items": DELIVERY}}),
    "WebhookReplayResult": obj(
        {
            "replay": obj(
                {
                    "after": {"type": "integer", "minimum": 0},
                    "until": {"type": "integer", "minimum": 0},
                }
            )
        }
    ),
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                    "hold": {
                        **ref("Hold"),
                        "description": "With hold_ended: the hold as it ended.",
                    },
                },
                optional=("fields", "hold"),
            )
        }
    ),
    "Health": obj({"status": {"const": "ok"}}),
    "LockHolder": {
        **obj(
            {
                "running": {"type": "boolean"},
                "pid": {"type": ["integer", "null"]},
                "host": {"type": "string"},
                "since": {"type": ["string", "null"], "format": "date-time"},
                "standbys": {
                    "type": "array",
                    "description": "Followers standing by to take over.",
                    "items": {"type": "object"},
                },
            },
            optional=("pid", "host", "since", "standbys"),
        ),
        "description": (
            "Whether a process holds the lock, and which (pid, host, since); "
            "pocket status may say more of it."
        ),
        "additionalProperties": True,
    },
    "Projection": obj(
        {
            "name": {"type": "string"},
            "live_version": {"type": "integer"},
            "latest_version": {
                "type": "integer",
                "description": "The latest version this code declares.",
            },
            "position": {
                "type": "integer",
                "description": "How far in the event log the live version reflects.",
            },
            "head": {"type": "integer", "description": "The log's last position."},
            "lag_events": {"type": "integer", "minimum": 0},
            "lag_seconds": {
                "type": "number",
                "minimum": 0,
                "description": "How long the oldest event not yet applied has waited.",
            },
            "follower": {
                **ref("LockHolder"),
                "description": "The active follower (and any standbys).",
            },
            "migration": {
                **ref("LockHolder"),
                "description": "A pocket migrate in progress.",
            },
            "versions": {
                "type": "array",
                "items": obj(
                    {
                        "version": {"type": "integer"},
                        "position": {"type": "integer"},
                        "live": {"type": "boolean"},
                    }
                ),
            },
        }
    ),
    "Follower": obj(
        {
            "name": {
                "type": "string",
                "description": (
                    "The follower: hold_expiry, which records expiries (with "
                    "open_holds, due_holds, next_expiry); webhook_deliveries, "
                    "which sends the change feed (with subscriptions, "
                    "pending_deliveries, parked_deliveries); broker_publisher, "
                    "which publishes events to the broker (with exchange)."
                ),
            },
            "position": {
                "type": "integer",
                "description": "How far in the event log it has read.",
            },
            "head": {"type": "integer", "description": "The log's last position."},
            "lag_events": {"type": "integer", "minimum": 0},
            "lag_seconds": {"type": "number", "minimum": 0},
            "follower": {
                **ref("LockHolder"),
                "description": "The active follower (and any standbys).",
            },
            "open_holds": {
                "type": "integer",
                "minimum": 0,
                "description": "Open holds it knows of.",
            },
            "due_holds": {
                "type": "integer",
                "minimum": 0,
                "description": "Open holds past their expiry, not yet recorded.",
            },
            "next_expiry": {
                "description": "When the soonest open hold expires (null: none).",
                "oneOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
            },
            "subscriptions": {
                "type": "integer",
                "minimum": 0,
                "description": "Webhook subscriptions (the webhook follower's).",
            },
            "pending_deliveries": {
                "type": "integer",
                "minimum": 0,
                "description": "Webhook deliveries waiting to be sent or retried.",
            },
            "parked_deliveries": {
                "type": "integer",
                "minimum": 0,
                "description": "Webhook deliveries given up on (replay them).",
            },
            "exchange": {
                "type": "string",
                "description": "The broker publisher's exchange (docs/broker.md).",
            },
        },
        # Each follower's own figures: the holds are hold_expiry's, the
        # deliveries webhook_deliveries', the exchange broker_publisher's.
        optional=(
            "open_holds",
            "due_holds",
            "next_expiry",
            "subscriptions",
            "pending_deliveries",
            "parked_deliveries",
            "exchange",
        ),
    ),
    "Verification": obj(
        {
            "at": {**TIMESTAMP, "description": "When the run finished."},
            "checked": {"type": "integer", "description": "Wallets compared."},
            "mismatches": {"type": "integer"},
            "position": {
                "type": "integer",
                "description": "The log position it compared at.",
            },
            "version": {
                "type": "integer",
                "description": "The version of wallet_records it compared.",
            },
        }
    ),
    "AdminStatus": obj(
        {
            "database": {
                "type": "string",
                "description": "Which database this server uses.",
            },
            "gate": obj({"open": {"type": "boolean"}}),
            "projections": {
                "type": "array",
                "description": "Exactly what `pocket status --json` reports.",
                "items": ref("Projection"),
            },
            "followers": {
                "type": "array",
                "description": (
                    "The other followers, as `pocket status --json` reports them: "
                    "the hold-expiry follower."
                ),
                "items": ref("Follower"),
            },
            "verify": {
                "description": "The last `pocket verify` run, null if none ran.",
                "oneOf": [ref("Verification"), {"type": "null"}],
            },
            "reads": {
                "description": (
                    "Where the reads that may lag (the admin list of users, "
                    "`pocket verify`) go: null without POCKET_READ_URL."
                ),
                "oneOf": [ref("Reads"), {"type": "null"}],
            },
            "writes": ref("Writes"),
        }
    ),
    "Writes": obj(
        {
            "confirmed": {
                "type": "boolean",
                "description": (
                    "Whether the database confirms writes now. False while a "
                    "commit waits for a synchronous standby that is not there: "
                    "writes are then answered 503, reads still served."
                ),
            },
            "stuck_since": {
                **TIMESTAMP,
                "type": ["string", "null"],
                "description": "When this server's writes stopped being confirmed.",
            },
            "why": {"type": ["string", "null"], "description": "Why, for a person."},
            "database": {
                "description": "What the primary says (null on SQLite).",
                "oneOf": [ref("CommitWaits"), {"type": "null"}],
            },
        }
    ),
    "CommitWaits": obj(
        {
            "synchronous_standby_names": {"type": "string"},
            "synchronous_commit": {"type": "string"},
            "synchronous_standbys_streaming": {
                "type": ["integer", "null"],
                "description": "null when the role cannot see them (pg_monitor).",
            },
            "commits_waiting": {
                "type": "integer",
                "description": "Sessions whose commit waits for a standby now.",
            },
            "oldest_wait_seconds": {"type": "number"},
        }
    ),
    "Reads": obj(
        {
            "url": {"type": "string", "description": "POCKET_READ_URL's servers."},
            "server": {
                "type": ["string", "null"],
                "description": "host:port of the server it reached, null if none.",
            },
            "standby": {"type": ["boolean", "null"]},
            "lag_seconds": {
                "type": ["number", "null"],
                "description": (
                    "How far its replay is behind the primary's commits; null "
                    "when it cannot know (no link to the primary) or was not "
                    "reached."
                ),
            },
            "max_lag_seconds": {
                "type": "number",
                "description": "POCKET_READ_MAX_LAG_SECONDS.",
            },
            "served_by": {
                "enum": ["read server", "primary"],
                "description": "Where those reads go now.",
            },
            "problem": {
                "type": ["string", "null"],
                "description": "Why they go to the primary, null when they do not.",
            },
        }
    ),
    "Ready": obj({"status": {"const": "ready"}}),
}


def answer(description: str, schema: Schema, media_type: str = JSON) -> Schema:
    """A response: JSON unless said otherwise."""
    return {
        "description": description,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        "content": {media_type: {"schema": schema}},
    }


# Headers that every answer of an error status carries, beside X-Request-Id.
ERROR_HEADERS: dict[int, dict[str, Schema]] = {
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    }
}


def error_responses() -> dict[str, Schema]:
    """One response per status in the catalogue of errors, naming its codes."""
    whens: dict[int, dict[str, dict[str, None]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for kind in catalogue():
        whens[kind.status.value][kind.code][kind.when] = None
    responses = {}
    for status, codes in whens.items():
        description = "\n".join(
            f"- `{code}`: {' '.join(texts)}" for code, texts in codes.items()
        )
        narrowed = {
            "properties": {"error": {"properties": {"code": {"enum": [*codes]}}}}
        }
        response = answer(description, {"allOf": [ref("Error"), narrowed]})
        response["headers"].update(ERROR_HEADERS.get(status, {}))
        responses[f"E{status}"] = response
    return responses


# Swagger UI shows the operations grouped by these, in this order.
TAGS = [
    {"name": "users", "description": "Signing up, a user and their wallet, tokens."},
    {
        "name": "money",
        "description": (
            "Moving money in, out and between wallets, and closing one "
            "(send an Idempotency-Key)."
        ),
    },
    {
        "name": "holds",
        "description": (
            "Reserving money until it is captured, voided or expires "
            "(send an Idempotency-Key)."
        ),
    },
    {
        "name": "history",
        "description": "A wallet's past: its transactions, and the wallet as it was.",
    },
    {
        "name": "admin",
        "description": (
            "The operator's (POCKET_ADMIN_TOKEN): users, status, a wallet's limits."
        ),
    },
    {
        "name": "webhooks",
        "description": (
            "The change feed (admin): subscriptions, their deliveries, replays "
            "(docs/webhooks.md)."
        ),
    },
    {"name": "pages", "description": "The wallet page and the operator console."},
    {
        "name": "meta",
        "description": "Health, readiness, metrics and this document.",
    },
]


def openapi_document(app: Flask) -> dict[str, Any]:
    """The whole document, from what each of the app's routes declares."""
    operations = documented_operations(app)
    bodies = {
        op.body.name: op.body.schema()
        for _, _, op, _ in operations
        if op.body is not None
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pocket",
            "version": __version__,
            "description": (
                "Event-sourced wallets: every balance audited, explained and "
                "replayable. Money is exact to the cent and goes out as strings."
            ),
        },
        "security": [{"bearer": []}],
        "tags": TAGS,
        "paths": paths(operations),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The user's token (from sign-up) or the operator's "
                        "POCKET_ADMIN_TOKEN."
                    ),
                }
            },
            "headers": {
                "X-Request-Id": {
                    "description": "The request's correlation id (yours or a new one).",
                    "schema": {"type": "string"},
                }
            },
            # Request bodies: the same declarations the views read them with.
            "schemas": {**SCHEMAS, **bodies},
            "responses": error_responses(),
        },
    }


Documented = tuple[Rule, str, Operation, tuple[Param, ...]]


def documented_operations(app: Flask) -> list[Documented]:
    """Each route's operations: its rule, method, operation and query
    parameters, in the order the routes were declared."""
    found: list[Documented] = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        operation: Operation | None = getattr(view, "operation", None)
        if operation is None:
            continue
        query: tuple[Param, ...] = getattr(view, "query", ())
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule, method.lower(), operation, query))
    return found


def paths(operations: list[Documented]) -> dict[str, dict[str, Schema]]:
    """The paths, grouped by their tags' order (then in the routes' order)."""
    order = {tag["name"]: n for n, tag in enumerate(TAGS)}
    found: dict[str, dict[str, Schema]] = {}
    for rule, method, operation, query in operations:
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        found.setdefault(path, {})[method] = operation_spec(rule, operation, query)
    return dict(
        sorted(
            found.items(),
            key=lambda item: min(order[m["tags"][0]] for m in item[1].values()),
        )
    )


def operation_spec(
    rule: Rule, operation: Operation, query: tuple[Param, ...]
) -> Schema:
    """One operation as OpenAPI declares it."""
    if operation.page:
        return html_page(operation)
    status, description, schema = operation.success
    success = ref(schema) if isinstance(schema, str) else schema
    responses = {status: answer(description, success, operation.media_type)}
    for code in operation.errors:
        responses[code] = {"$ref": f"#/components/responses/E{code}"}
    # A bad X-Request-Id is refused with 422, on any route.
    responses.setdefault("422", {"$ref": "#/components/responses/E422"})
    spec: Schema = {"tags": [operation.tag], "summary": operation.summary}
    if operation.description:
        spec["description"] = operation.description
    spec["responses"] = responses
    params = [p for p in PATH_PARAMS if p.name in rule.arguments]
    if operation.keyed:
        params.append(IDEMPOTENCY_KEY)
    spec["parameters"] = [p.spec() for p in (*params, *query, REQUEST_ID)]
    if operation.body is not None:
        spec["requestBody"] = request_body(operation.body, operation.body_required)
    if not operation.secured:
        spec["security"] = []
    elif operation.also_anonymous:
        spec["security"] = [{}, {"bearer": []}]
    return spec


def request_body(body: Body, required: bool) -> Schema:
    """An operation's JSON body, by its declaration's name."""
    return {"required": required, "content": {JSON: {"schema": ref(body.name)}}}


def html_page(operation: Operation) -> Schema:
    """A page for people: public HTML, which calls the API for its data."""
    return {
        "tags": [operation.tag],
        "summary": operation.summary,
        "security": [],
        "responses": {
            "200": {
                "description": "An HTML page.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    }

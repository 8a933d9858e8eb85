"""The OpenAPI 3.1 document of Pocket's HTTP API, served at GET /openapi.json.

Written by hand next to the routes it describes, but for what is declared once
elsewhere: the request bodies come from the declarations the views read them
with (`Body`), the error responses from the catalogue of errors. The tests check
it against the routes and run generated requests against the live app.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import Any

from pocket import __version__
from pocket.config import DEFAULT_SIGNUP_RATE
from pocket.web.body import NO_FIELDS, Body, Schema
from pocket.web.errors import catalogue
from pocket.web.money import ADD_MONEY, DRAW_MONEY, NEW_TRANSFER
from pocket.web.users import NEW_USER

BODIES = (NEW_USER, ADD_MONEY, DRAW_MONEY, NEW_TRANSFER, NO_FIELDS)
JSON = "application/json"

MONEY_OUT: Schema = {
    "type": "string",
    "pattern": r"^[0-9]+\.[0-9]{2}$",
    "description": "Money, with exactly two decimal places.",
    "examples": ["15.00"],
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
            "balance": MONEY_OUT,
            "version": {"type": "integer", "minimum": 1},
            "closed": {"type": "boolean"},
        }
    ),
    "WalletAsOf": obj(
        {
            "aggregate_id": UUID_STRING,
            "user_id": USER_ID_OUT,
            "balance": MONEY_OUT,
            "version": {"type": "integer", "minimum": 1},
            "closed": {"type": "boolean"},
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
                },
                optional=("closed",),
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
            "type": {"enum": ["IN", "OUT"]},
            "amount": MONEY_OUT,
            "balance": {**MONEY_OUT, "description": "The balance after this entry."},
            "date": TIMESTAMP,
            "source": {"type": "string"},
            "destination": {"type": "string"},
            "transfer_id": UUID_STRING,
            "counterparty": obj({"user_id": USER_ID_OUT, "wallet_id": UUID_STRING}),
            "description": {"type": "string"},
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
        ),
    ),
    "TransactionPage": obj(
        {
            "balance": MONEY_OUT,
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
                },
                optional=("fields",),
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
    # Request bodies: the same declarations the views read them with.
    **{body.name: body.schema() for body in BODIES},
}

USER_ID: Schema = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "1 to 255 visible ASCII characters (letters, digits, punctuation; no "
        "spaces), scoped to the caller; anything else is refused with 422. The "
        "same key with the same body returns the first response and changes "
        "nothing; with a different body, 422; while the first request runs, 409."
    ),
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
}
REQUEST_ID: Schema = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": (
        "Your correlation id for the request, recorded with every event it "
        "causes and returned in the answer: 1 to 128 visible ASCII characters "
        "(no spaces); anything else is refused with 422. Without it, Pocket "
        "makes one up."
    ),
    "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"},
}
LIMIT: Schema = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
}
AFTER: Schema = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "The opaque cursor from the previous page's next.",
    "schema": {"type": "string"},
}
ORDER: Schema = {
    "name": "order",
    "in": "query",
    "required": False,
    "description": (
        "oldest: the first movement first (the default); newest: the latest "
        "first, as the wallet page shows them. A cursor (next) is for the order "
        "that gave it: the other order refuses it with 422."
    ),
    "schema": {"enum": ["oldest", "newest"], "default": "oldest"},
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


def operation(
    summary: str,
    success: tuple[str, str, str | Schema],
    errors: tuple[str, ...],
    *,
    tag: str,
    body: Body | None = None,
    body_required: bool = True,
    parameters: tuple[Schema, ...] = (),
    secured: bool = True,
    media_type: str = JSON,
) -> Schema:
    """One operation: its body, its answer (a component's name, or a schema),
    its errors."""
    status, description, schema = success
    success_schema = ref(schema) if isinstance(schema, str) else schema
    responses = {status: answer(description, success_schema, media_type)}
    for code in errors:
        responses[code] = {"$ref": f"#/components/responses/E{code}"}
    responses.setdefault("422", {"$ref": "#/components/responses/E422"})
    spec: Schema = {"tags": [tag], "summary": summary, "responses": responses}
    spec["parameters"] = [*parameters, REQUEST_ID]
    if body is not None:
        spec["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": ref(body.name)}},
        }
    if not secured:
        spec["security"] = []
    return spec


def html_page(summary: str, tag: str = "pages") -> Schema:
    """A page for people: public HTML, which calls the API for its data."""
    return {
        "get": {
            "tags": [tag],
            "summary": summary,
            "security": [],
            "responses": {
                "200": {
                    "description": "An HTML page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    }


MONEY_ERRORS = ("400", "401", "404", "409", "413", "415", "422", "503")

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
        "name": "history",
        "description": "A wallet's past: its transactions, and the wallet as it was.",
    },
    {
        "name": "admin",
        "description": "The operator's (POCKET_ADMIN_TOKEN): users and status.",
    },
    {"name": "pages", "description": "The wallet page and the operator console."},
    {
        "name": "meta",
        "description": "Health, readiness, metrics and this document.",
    },
]


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document."""
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
        "paths": {
            "/users": {
                "post": {
                    **operation(
                        "Sign up a user (opens their wallet; returns their token)",
                        ("201", "Created.", "NewAccount"),
                        ("400", "401", "404", "413", "415", "422", "429", "503"),
                        body=NEW_USER,
                        tag="users",
                    ),
                    "description": (
                        "Without the admin token, each client address may sign "
                        "up so often (POCKET_SIGNUP_RATE, by default "
                        f"{DEFAULT_SIGNUP_RATE}); past that, 429 "
                        "`too_many_signups` with Retry-After, and nobody is "
                        "created."
                    ),
                    "security": [{}, {"bearer": []}],
                },
                "get": operation(
                    "List users with their projected wallets (admin)",
                    ("200", "A page of users.", "AccountPage"),
                    ("401", "404", "422", "503"),
                    parameters=(LIMIT, AFTER),
                    tag="admin",
                ),
            },
            "/users/{user_id}": {
                "get": operation(
                    "A user and their wallet",
                    ("200", "The user and wallet.", "Account"),
                    ("401", "404", "503"),
                    parameters=(USER_ID,),
                    tag="users",
                )
            },
            "/users/{user_id}/token": {
                "post": operation(
                    "Issue a new API token (the old one stops working)",
                    ("200", "The new token.", "Token"),
                    ("400", "401", "404", "413", "415", "422", "503"),
                    body=NO_FIELDS,
                    body_required=False,
                    parameters=(USER_ID,),
                    tag="users",
                )
            },
            "/users/{user_id}/add_money": {
                "post": operation(
                    "Put money into the wallet",
                    ("200", "The wallet after the command.", "Account"),
                    MONEY_ERRORS,
                    body=ADD_MONEY,
                    parameters=(USER_ID, IDEMPOTENCY_KEY),
                    tag="money",
                )
            },
            "/users/{user_id}/draw_money": {
                "post": operation(
                    "Take money out of the wallet (never below zero)",
                    ("200", "The wallet after the command.", "Account"),
                    MONEY_ERRORS,
                    body=DRAW_MONEY,
                    parameters=(USER_ID, IDEMPOTENCY_KEY),
                    tag="money",
                )
            },
            "/users/{user_id}/transfers": {
                "post": operation(
                    "Move money to another user's wallet, atomically",
                    ("201", "The transfer and the sender's wallet.", "TransferResult"),
                    MONEY_ERRORS,
                    body=NEW_TRANSFER,
                    parameters=(USER_ID, IDEMPOTENCY_KEY),
                    tag="money",
                )
            },
            "/users/{user_id}/close": {
                "post": operation(
                    "Close the wallet (it must be empty)",
                    ("200", "The closed wallet.", "Account"),
                    MONEY_ERRORS,
                    body=NO_FIELDS,
                    body_required=False,
                    parameters=(USER_ID, IDEMPOTENCY_KEY),
                    tag="money",
                )
            },
            "/users/{user_id}/transactions": {
                "get": operation(
                    "The wallet's money movements, paged: oldest or newest first",
                    ("200", "A page of transactions.", "TransactionPage"),
                    ("401", "404", "422", "503"),
                    parameters=(USER_ID, LIMIT, AFTER, ORDER),
                    tag="history",
                )
            },
            "/users/{user_id}/wallet": {
                "get": operation(
                    "The wallet now, at a version, or at a moment",
                    ("200", "The wallet as it was.", "AccountAsOf"),
                    ("401", "404", "422", "503"),
                    parameters=(
                        USER_ID,
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1},
                        },
                        {
                            "name": "at",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "format": "date-time"},
                        },
                    ),
                    tag="history",
                )
            },
            "/admin/status": {
                "get": {
                    **operation(
                        "The projections, the 503 gate and the last verify (admin)",
                        ("200", "The service's state.", "AdminStatus"),
                        ("401", "404", "503"),
                        tag="admin",
                    ),
                    "description": (
                        "What the operator console shows. While the database is "
                        "unreachable the 503 gate is closed, and this answers 503 "
                        "`service_unavailable` as every endpoint that needs the "
                        "database does."
                    ),
                }
            },
            "/": html_page(
                "The wallet page: sign up or in, the balance, the history, "
                "moving money (its data needs the user's token)"
            ),
            "/console": html_page(
                "The operator console (its data needs the admin token)"
            ),
            "/docs": html_page(
                "This document, rendered for people (Swagger UI)", tag="meta"
            ),
            "/health": {
                "get": operation(
                    "The server is up (the database is not asked)",
                    ("200", "Up.", "Health"),
                    (),
                    secured=False,
                    tag="meta",
                )
            },
            "/health/ready": {
                "get": {
                    **operation(
                        "Ready to serve: the database answers and confirms writes",
                        ("200", "Ready.", "Ready"),
                        ("503",),
                        secured=False,
                        tag="meta",
                    ),
                    "description": (
                        "503 while the database cannot be reached, and while it "
                        "does not confirm writes (a synchronous standby gone): "
                        "the message says why. Reads are still served then."
                    ),
                }
            },
            "/metrics": {
                "get": {
                    **operation(
                        "This process's metrics, for Prometheus",
                        ("200", "The metrics.", {"type": "string"}),
                        (),
                        secured=False,
                        media_type="text/plain",
                        tag="meta",
                    ),
                    "description": (
                        "Prometheus' text format (version 0.0.4): requests, "
                        "latency and refusals by route, group commits, the 503 "
                        "gate, the projection's lag and this process's "
                        "followers. Public, like /health: no user, wallet or "
                        "amount appears in it."
                    ),
                }
            },
            "/openapi.json": {
                "get": {
                    "tags": ["meta"],
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {
                                "application/json": {"schema": {"type": "object"}}
                            },
                        }
                    },
                }
            },
        },
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
            "schemas": SCHEMAS,
            "responses": error_responses(),
        },
    }

"""A revoked token can never do anything again, on any server process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.processes import serve

pytestmark = pytest.mark.e2e


def test_a_token_revoked_through_one_process_is_dead_for_changes_on_another(
    tmp_path: Path, postgres_url: str
) -> None:
    # A long cache window, so that the thief's process surely still trusts the
    # stolen token for reads while it is used for changes.
    env = {"POCKET_DATABASE_URL": postgres_url, "POCKET_TOKEN_CACHE_SECONDS": "60"}
    first, api_a = serve(tmp_path, env, "--no-follower")
    second, api_b = serve(tmp_path, env, "--no-follower")
    try:
        status, body = api_a.post("/users", {"name": "Owner"})
        assert status == 201
        user_id, stolen = body["user"]["id"], body["token"]
        path = f"/users/{user_id}"
        owner_a = api_a.as_user(stolen)
        status, _ = owner_a.post(f"{path}/add_money", {"amount": "50", "source": "x"})
        assert status == 200
        thief = api_b.as_user(stolen)
        assert thief.get(path)[0] == 200  # process B now has the token cached

        # The owner notices the theft and rotates the token through process A.
        status, body = owner_a.post(f"{path}/token", None)
        assert status == 200
        owner_b = api_b.as_user(body["token"])

        # Within B's cache window, the thief tries to take the wallet back...
        status, body = thief.post(f"{path}/token", None)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        # ...and to move money or close it.
        for action, payload in [
            ("draw_money", {"amount": "1", "destination": "thief"}),
            ("add_money", {"amount": "1", "source": "thief"}),
            ("transfers", {"to_user_id": user_id, "amount": "1"}),
            ("close", None),
        ]:
            status, body = thief.post(f"{path}/{action}", payload)
            assert (status, body["error"]["code"]) == (401, "unauthorized"), action

        # The owner's new token works everywhere, and nothing moved.
        status, body = owner_b.get(path)
        assert (status, body["wallet"]["balance"]) == (200, "50.00")
        status, _ = owner_b.post(
            f"{path}/draw_money", {"amount": "1", "destination": "x"}
        )
        assert status == 200
    finally:
        first.close()
        second.close()

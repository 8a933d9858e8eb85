"""End to end: webhooks from real processes on PostgreSQL. `pocket serve
--no-follower` takes the writes; two `pocket follow` processes run the webhook
follower, one sending, one standing by. Subscribed through the admin's API, a
receiver gets every event at least once, in order per wallet, signed, whether the
sending follower is killed with -9 mid-delivery or the receiver is down or hangs
for a while; a balance alert fires once per crossing whichever process sends it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import cycle
from pathlib import Path
from typing import Any

import pytest

from pocket.feed import verify
from tests.e2e.processes import Api, PocketProcess, follow, serve, wait_for
from tests.receiver import Receiver, receiver

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "operator-secret-0123456789"
FOLLOWER = "webhook_deliveries"
# Short enough that a hung receiver and its retries fit in a test: a try gives up
# after a second, and retries come at most half a second apart.
WEBHOOK_ENV = {
    "POCKET_WEBHOOK_TIMEOUT_SECONDS": "1",
    "POCKET_WEBHOOK_BACKOFF_CAP_SECONDS": "0.5",
}
# What one sender posts before it records any outcome (concurrency 4, four
# heads each): a kill -9 can lose at most this many outcomes, each sent again.
SENDER_BATCH = 16


def sends(process: PocketProcess) -> bool:
    """Whether the process's webhook follower is the active one."""
    return f"Active: this follower applies {FOLLOWER}" in process.output


def stands_by(process: PocketProcess) -> bool:
    """Whether the process's webhook follower waits for another's lock."""
    return f"applies {FOLLOWER}; this one takes over" in process.output


@dataclass
class Cluster:
    """The API's process and two followers: `active` sends, `standby` waits."""

    admin: Api
    active: PocketProcess
    standby: PocketProcess


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    env = {
        "POCKET_DATABASE_URL": postgres_url,
        "POCKET_ADMIN_TOKEN": ADMIN_TOKEN,
        **WEBHOOK_ENV,
    }
    processes: list[PocketProcess] = []
    try:
        server, api = serve(tmp_path, env, "--no-follower")
        processes.append(server)
        processes.append(follow(tmp_path, env))
        wait_for(partial(sends, processes[1]), what="the first follower to send")
        processes.append(follow(tmp_path, env))
        wait_for(partial(stands_by, processes[2]), what="the second to stand by")
        yield Cluster(api.as_user(ADMIN_TOKEN), processes[1], processes[2])
    finally:
        for process in processes:
            process.close()


@dataclass(frozen=True)
class Account:
    """A user signed up through the API, and their wallet."""

    user_id: int
    wallet_id: str
    api: Api


def sign_up(admin: Api, count: int, money: str = "100.00") -> list[Account]:
    """Users, each with a wallet holding money (to send transfers from)."""
    accounts = []
    for n in range(count):
        status, body = admin.post("/users", {"name": f"Writer {n}"})
        assert status == 201, body
        account = Account(
            body["user"]["id"],
            body["wallet"]["aggregate_id"],
            admin.as_user(body["token"]),
        )
        path = f"/users/{account.user_id}/add_money"
        status, body = account.api.post(path, {"amount": money, "source": "seed"})
        assert status == 200, body
        accounts.append(account)
    return accounts


def subscribe(admin: Api, url: str, **fields: Any) -> tuple[str, str]:
    """A subscription made through the API: its id and secret."""
    status, body = admin.post("/admin/webhooks", {"url": url, **fields})
    assert status == 201, body
    return body["webhook"]["id"], body["webhook"]["secret"]


def write(accounts: list[Account], count: int, offset: int) -> None:
    """count writes from one client: credits, and transfers to the next wallet
    (an event in each of two wallets)."""
    for n, account in zip(range(count), cycle(accounts[offset:] + accounts[:offset])):
        if n % 3 == 2:
            to = accounts[(accounts.index(account) + 1) % len(accounts)]
            path = f"/users/{account.user_id}/transfers"
            status, body = account.api.post(
                path, {"to_user_id": to.user_id, "amount": "0.50"}
            )
            assert status == 201, body
        else:
            path = f"/users/{account.user_id}/add_money"
            status, body = account.api.post(path, {"amount": "1.00", "source": "x"})
            assert status == 200, body


def write_from_threads(
    accounts: list[Account], threads: int, each: int
) -> list[Future[None]]:
    """Clients writing at once, each to every wallet in turn; started (their
    failures raised by written())."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="writer")
    writers = [pool.submit(write, accounts, each, n) for n in range(threads)]
    pool.shutdown(wait=False)  # They run on; written() waits for them.
    return writers


def written(writers: list[Future[None]]) -> None:
    """Waits for the writers; raises what failed in one."""
    for writer in writers:
        writer.result(timeout=60)


def versions(admin: Api, accounts: list[Account]) -> dict[str, int]:
    """Each wallet's version now: its events are sequences 1 to it."""
    found = {}
    for account in accounts:
        status, body = admin.get(f"/users/{account.user_id}")
        assert status == 200, body
        found[body["wallet"]["aggregate_id"]] = body["wallet"]["version"]
    return found


def wait_for_every_event(
    hook: Receiver, expected: dict[str, int], timeout: float = 30
) -> None:
    def arrived() -> bool:
        seen = {(e["wallet_id"], e["sequence"]) for e in hook.events()}
        return len(seen) >= sum(expected.values())

    wait_for(arrived, timeout=timeout, what="every event delivered")


def check_every_event_in_order(hook: Receiver, expected: dict[str, int]) -> None:
    """Every wallet's events arrived, each first in the wallet's order, and each
    event under one id whatever its tries."""
    events = hook.events()
    for wallet_id, version in expected.items():
        mine = [e for e in events if e["wallet_id"] == wallet_id]
        first_seen = list(dict.fromkeys(e["sequence"] for e in mine))
        assert first_seen == list(range(1, version + 1)), wallet_id
        ids = {(e["sequence"], e["id"]) for e in mine}
        assert len(ids) == version, "one id per event, however often it is sent"
    assert {e["wallet_id"] for e in events} == set(expected)


def check_signatures(hook: Receiver, secret: str) -> None:
    """Every delivery verifies under the subscription's secret; one whose body,
    signature or secret is another does not."""
    requests = hook.delivered()
    assert requests
    for request in requests:
        header = request.headers["Pocket-Signature"]
        now = time.time()
        assert verify(secret, header, request.body, now)
        assert request.headers["Pocket-Event-Id"] == request.event["id"]
        tampered = request.body.replace(b'"sequence":', b'"sequence":1')
        assert not verify(secret, header, tampered, now)
        assert not verify(secret, header, request.body + b" ", now)
        assert not verify(secret + "x", header, request.body, now)
        assert not verify(secret, header, request.body, now + 301)  # A replay.


def repeats(hook: Receiver) -> int:
    """How many deliveries taken were of an event taken before under the same
    try number (sent again without being recorded as a retry)."""
    tries = [
        (r.event["id"], r.headers["Pocket-Delivery-Attempt"]) for r in hook.delivered()
    ]
    return len(tries) - len(set(tries))


def test_every_event_arrives_in_order_per_wallet_across_a_kill_9_of_the_sender(
    cluster: Cluster,
) -> None:
    with receiver() as hook:
        hook.delay = 0.01  # A backlog, so that the kill finds deliveries in flight.
        _, secret = subscribe(cluster.admin, hook.url)
        accounts = sign_up(cluster.admin, 6)
        writers = write_from_threads(accounts, threads=4, each=45)
        wait_for(lambda: len(hook.delivered()) >= 40, what="deliveries under way")
        cluster.active.kill()
        killed_at = time.monotonic()
        written(writers)
        wait_for(partial(sends, cluster.standby), timeout=10, what="the takeover")
        assert time.monotonic() - killed_at < 5
        expected = versions(cluster.admin, accounts)
        wait_for_every_event(hook, expected)
        check_every_event_in_order(hook, expected)
        check_signatures(hook, secret)
        # Only what the killed sender had in hand is sent again.
        assert repeats(hook) <= SENDER_BATCH


def test_a_receiver_down_or_hanging_for_a_while_gets_every_event_in_order(
    cluster: Cluster,
) -> None:
    with receiver() as down, receiver() as hung:
        _, down_secret = subscribe(cluster.admin, down.url)
        hung_id, hung_secret = subscribe(cluster.admin, hung.url)
        down.fail_until = time.time() + 3
        hung.hang_until = time.time() + 3
        hung.hang_seconds = 1.5  # Past the 1 s timeout: the sender gives up, retries.
        accounts = sign_up(cluster.admin, 4)
        written(write_from_threads(accounts, threads=2, each=20))
        expected = versions(cluster.admin, accounts)
        for hook, secret in ((down, down_secret), (hung, hung_secret)):
            wait_for_every_event(hook, expected, timeout=45)
            check_every_event_in_order(hook, expected)
            check_signatures(hook, secret)
        assert any(r.status == 500 for r in down.requests)
        # A try the hung receiver took after the sender gave up is tried again.
        assert any(r.headers["Pocket-Delivery-Attempt"] != "1" for r in hung.requests)

        def settled() -> bool:
            status, body = cluster.admin.get(f"/admin/webhooks/{hung_id}")
            assert status == 200, body
            pending: int = body["webhook"]["pending"]
            return pending == 0

        wait_for(settled, what="the hung receiver's retries done")
        _, body = cluster.admin.get(f"/admin/webhooks/{hung_id}")
        assert body["webhook"]["parked"] == 0
        assert "no answer within 1s" in body["webhook"]["last_error"]


def test_a_balance_alert_fires_once_per_crossing_whichever_follower_sends_it(
    cluster: Cluster,
) -> None:
    with receiver() as hook:
        subscribe(cluster.admin, hook.url, events=["balance.low"], alert_below="10.00")
        (account,) = sign_up(cluster.admin, 1, money="50.00")
        user = account.api

        def move(how: str, amount: str) -> None:
            path = f"/users/{account.user_id}/{how}"
            field = "source" if how == "add_money" else "destination"
            status, body = user.post(path, {"amount": amount, field: "x"})
            assert status == 200, body

        move("draw_money", "45.00")  # 5.00: crosses below.
        hook.wait_for(1)
        cluster.active.kill()  # The figures it kept stay: 5.00, below.
        move("draw_money", "1.00")  # 4.00: still below, no alert.
        wait_for(partial(sends, cluster.standby), timeout=10, what="the takeover")
        move("add_money", "20.00")  # 24.00: back above.
        move("draw_money", "20.00")  # 4.00: crosses again.
        hook.wait_for(2)
        time.sleep(1.5)  # Nothing more comes.
        alerts = list({a["id"]: a for a in hook.events()}.values())
        assert [a["type"] for a in alerts] == ["balance.low"] * 2
        assert [a["data"]["available_before"] for a in alerts] == ["50.00", "24.00"]
        assert [a["data"]["available_after"] for a in alerts] == ["5.00", "4.00"]
        assert [a["sequence"] for a in alerts] == [3, 6]


def test_a_follower_stopped_with_sigterm_hands_over_without_sending_twice(
    cluster: Cluster,
) -> None:
    """A clean stop (a deploy, a scale-down) finishes the tries in hand and
    records them before the standby may take over: no event is sent again
    as the same try."""
    with receiver() as hook:
        hook.delay = 0.8  # Tries in hand when the stop comes (within the 1 s).
        subscribe(cluster.admin, hook.url)
        accounts = sign_up(cluster.admin, 8)
        written(write_from_threads(accounts, threads=2, each=12))
        wait_for(lambda: len(hook.delivered()) >= 10, what="deliveries under way")
        assert cluster.active.terminate() == 0
        wait_for(partial(sends, cluster.standby), timeout=10, what="the takeover")
        expected = versions(cluster.admin, accounts)
        wait_for_every_event(hook, expected)
        check_every_event_in_order(hook, expected)
        assert repeats(hook) == 0

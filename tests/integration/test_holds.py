"""Holds and limits through the application, on every store: concurrent holds and
draws never spend past the credit limit, a hold ends once however its endings
race (in threads, and in several OS processes on one database), a capture never
takes more than its hold, the daily limit counts open holds, keyed commands run
once, and a capture for another wallet is a transfer."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from pocket.application import HoldInfo, Pocket, WalletInfo
from pocket.commands import (
    AddMoney,
    CaptureHold,
    Command,
    DrawMoney,
    ExpireHold,
    OpenWallet,
    PlaceHold,
    SetCreditLimit,
    SetDailyLimit,
    VoidHold,
    expiry_key,
)
from pocket.config import Settings
from pocket.domainmodel import Wallet, utcnow
from pocket.errors import (
    CaptureExceedsHold,
    CommandInFlight,
    DailyLimitExceeded,
    HoldEnded,
    HoldNotDue,
    IdempotencyKeyReused,
    InsufficientFunds,
)

D = Decimal
# How long a worker waits for the others, or for a hold's expiry to come.
PATIENCE_SECONDS = 60.0


@pytest.fixture
def pocket(any_settings: Settings) -> Iterator[Pocket]:
    app = Pocket(env=dict(any_settings.env))
    yield app
    app.close()


def funded(pocket: Pocket, amount: str, user_id: str = "u") -> UUID:
    wallet_id = pocket.open_wallet(OpenWallet(user_id=user_id))
    pocket.add_money(AddMoney(wallet_id=wallet_id, amount=D(amount), source="seed"))
    return wallet_id


def place(
    pocket: Pocket,
    wallet_id: UUID,
    amount: str,
    *,
    expires_at: datetime | None = None,
    receiver_id: UUID | None = None,
    command_id: str | None = None,
) -> HoldInfo:
    return pocket.place_hold(
        PlaceHold(
            wallet_id=wallet_id,
            amount=D(amount),
            destination=None if receiver_id else "shop",
            receiver_id=receiver_id,
            expires_at=expires_at,
            expires_in=None if expires_at else 3600,
            command_id=command_id,
        )
    )


def draw(pocket: Pocket, wallet_id: UUID, amount: str) -> WalletInfo:
    return pocket.draw_money(
        DrawMoney(wallet_id=wallet_id, amount=D(amount), destination="ATM")
    )


def endings(pocket: Pocket, wallet_id: UUID) -> dict[UUID, list[str]]:
    """Each hold's ending events in the wallet's log, by hold."""
    found: dict[UUID, list[str]] = {}
    for event in pocket.events.get(wallet_id):
        if isinstance(event, Wallet.HoldPlaced):
            found.setdefault(event.hold_id, [])
        elif isinstance(event, Wallet.HoldCaptured):
            found.setdefault(event.hold_id, []).append("captured")
        elif isinstance(event, Wallet.HoldVoided):
            found.setdefault(event.hold_id, []).append("voided")
        elif isinstance(event, Wallet.HoldExpired):
            found.setdefault(event.hold_id, []).append("expired")
    return found


def reloaded(settings: Settings, wallet_id: UUID) -> WalletInfo:
    """The wallet as a new process reads it from the store."""
    other = Pocket(env=dict(settings.env))
    try:
        return other.get_wallet(wallet_id)
    finally:
        other.close()


# Holds and draws at once never spend past the credit limit


def spend(pocket: Pocket, wallet_id: UUID, rounds: int) -> Counter[str]:
    """Places a hold of 1,000 and draws 1,000, rounds times: what passed and
    what was refused."""
    outcomes: Counter[str] = Counter()
    for _ in range(rounds):
        for kind, act in (
            ("hold", lambda: place(pocket, wallet_id, "1000")),
            ("draw", lambda: draw(pocket, wallet_id, "1000")),
        ):
            try:
                act()
                outcomes[kind] += 1
            except InsufficientFunds:
                outcomes["refused"] += 1
    return outcomes


def limited_wallet(pocket: Pocket, credit_limit: str) -> UUID:
    wallet_id = funded(pocket, "5000")
    if D(credit_limit):
        pocket.set_credit_limit(
            SetCreditLimit(wallet_id=wallet_id, credit_limit=D(credit_limit))
        )
    return wallet_id


def check_spent_to_the_limit(
    wallet: WalletInfo, outcomes: Counter[str], credit_limit: str, attempts: int
) -> None:
    # 5,000 and the credit limit are room for exactly this many of 1,000.
    admissible = (5000 + int(credit_limit)) // 1000
    assert outcomes["hold"] + outcomes["draw"] == admissible
    assert outcomes["refused"] == attempts - admissible
    assert wallet.balance == D(5000 - 1000 * outcomes["draw"])
    assert wallet.held == D(1000 * outcomes["hold"])
    assert wallet.available == D(5000 + int(credit_limit) - 1000 * admissible)
    assert wallet.balance - wallet.held >= -D(credit_limit)


@pytest.mark.parametrize("credit_limit", ["0", "2000"])
def test_holds_and_draws_in_threads_never_spend_past_the_credit_limit(
    any_settings: Settings, pocket: Pocket, credit_limit: str
) -> None:
    wallet_id = limited_wallet(pocket, credit_limit)
    start = threading.Barrier(16)

    def run(_: int) -> Counter[str]:
        start.wait()
        return spend(pocket, wallet_id, rounds=2)

    with ThreadPoolExecutor(16) as threads:
        outcomes = sum(threads.map(run, range(16)), Counter[str]())
    check_spent_to_the_limit(
        pocket.get_wallet(wallet_id), outcomes, credit_limit, attempts=64
    )
    if any_settings.env["PERSISTENCE_MODULE"] != "eventsourcing.popo":
        assert reloaded(any_settings, wallet_id) == pocket.get_wallet(wallet_id)


def spending_process(
    env: dict[str, str], wallet_id: UUID, start: threading.Barrier
) -> Counter[str]:
    """A process of its own: a Pocket, four threads holding and drawing."""
    pocket = Pocket(env=env)
    try:
        start.wait(PATIENCE_SECONDS)
        with ThreadPoolExecutor(4) as threads:
            runs = threads.map(lambda _: spend(pocket, wallet_id, 2), range(4))
            return sum(runs, Counter[str]())
    finally:
        pocket.close()


def in_processes(count: int, work: Callable[..., Any], *args: Any) -> list[Any]:
    """What work(*args, barrier) returned in each of count spawned processes,
    each with a Pocket of its own on the test's database (the barrier lets
    them start together)."""
    context = multiprocessing.get_context("spawn")
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(count, mp_context=context) as processes,
    ):
        start = manager.Barrier(count)
        futures = [processes.submit(work, *args, start) for _ in range(count)]
        return [f.result(timeout=PATIENCE_SECONDS * 2) for f in futures]


@pytest.mark.parametrize("credit_limit", ["0", "2000"])
def test_holds_and_draws_from_several_processes_never_spend_past_the_credit_limit(
    sql_settings: Settings, credit_limit: str
) -> None:
    pocket = Pocket(env=dict(sql_settings.env))
    try:
        wallet_id = limited_wallet(pocket, credit_limit)
        runs = in_processes(4, spending_process, dict(sql_settings.env), wallet_id)
        check_spent_to_the_limit(
            pocket.get_wallet(wallet_id), sum(runs, Counter[str]()), credit_limit, 64
        )
    finally:
        pocket.close()


# A hold ends once, however capture, void and expiry race


ROLES = ("capture", "void", "expire", "expire", "capture")


def end(pocket: Pocket, role: str, wallet_id: UUID, hold_id: UUID, part: bool) -> str:
    """One ending of a hold, as a caller hears it: ok and the hold's status,
    or the status HoldEnded named. An expiry sent too early is sent again."""
    command: Command
    if role == "capture":
        amount = D("1.23") if part else None
        command = CaptureHold(wallet_id=wallet_id, hold_id=hold_id, amount=amount)
    elif role == "void":
        command = VoidHold(wallet_id=wallet_id, hold_id=hold_id)
    else:
        key = expiry_key(hold_id)
        command = ExpireHold(wallet_id=wallet_id, hold_id=hold_id, command_id=key)
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        try:
            answer: HoldInfo = getattr(pocket, f"{role}_hold")(command)
        except HoldEnded as ended:
            return f"ended {ended.status}"
        except HoldNotDue:
            if role != "expire" or time.monotonic() > deadline:
                return "not due"
            time.sleep(0.002)
            continue
        except CommandInFlight:  # Another thread sends the same expiry.
            time.sleep(0.002)
            continue
        return f"ok {answer.status}"


def race(pocket: Pocket, role: str, wallet_id: UUID) -> list[tuple[UUID, str]]:
    """Ends each of the wallet's holds (all expiring at one moment) in turn,
    each a few milliseconds further from that moment: from before it to
    after it (and a few milliseconds more at random, so that each role is
    first at some). Returns each hold's outcome."""
    holds = sorted(pocket.open_holds(wallet_id), key=lambda h: h.id)
    outcomes = []
    for n, hold in enumerate(holds):
        offset = (n - len(holds) // 2) * 0.015 + random.uniform(0, 0.01)
        time.sleep(max(0.0, hold.expires_at.timestamp() + offset - time.time()))
        outcomes.append((hold.id, end(pocket, role, wallet_id, hold.id, n % 2 == 1)))
    return outcomes


def holds_expiring_together(pocket: Pocket, count: int) -> tuple[UUID, datetime]:
    wallet_id = funded(pocket, "1000")
    expires_at = utcnow() + timedelta(seconds=1.5)
    for _ in range(count):
        place(pocket, wallet_id, "10", expires_at=expires_at)
    return wallet_id, expires_at


def check_each_hold_ended_once(
    pocket: Pocket, wallet_id: UUID, outcomes: list[tuple[UUID, str]], holds: int
) -> None:
    ended = endings(pocket, wallet_id)
    assert len(ended) == holds
    assert all(len(kinds) == 1 for kinds in ended.values()), ended
    for hold_id, outcome in outcomes:
        (status,) = ended[hold_id]
        # The winner heard ok, every loser the winner's status.
        assert outcome in (f"ok {status}", f"ended {status}"), (outcome, status)
    winners = Counter((h, o) for h, o in outcomes if o.startswith("ok"))
    for (hold_id, outcome), count in winners.items():
        # Only the expiry may be heard twice: both followers send its key.
        assert count == 1 or outcome == "ok expired", (hold_id, outcome, count)
    captured = sum(
        (D("1.23") if n % 2 else D("10")) * ("captured" in ended[h])
        for n, h in enumerate(sorted(ended))
    )
    wallet = pocket.get_wallet(wallet_id)
    assert (wallet.balance, wallet.held) == (D("1000") - captured, D("0.00"))
    assert pocket.open_holds(wallet_id) == []


def test_capture_void_and_expiry_racing_in_threads_end_each_hold_once(
    pocket: Pocket,
) -> None:
    wallet_id, _ = holds_expiring_together(pocket, 8)
    with ThreadPoolExecutor(len(ROLES)) as threads:
        runs = threads.map(lambda role: race(pocket, role, wallet_id), ROLES)
        outcomes = [outcome for run in runs for outcome in run]
    check_each_hold_ended_once(pocket, wallet_id, outcomes, 8)


def racing_process(
    env: dict[str, str], wallet_id: UUID, role: str, start: threading.Barrier
) -> list[tuple[UUID, str]]:
    """A process of its own: a Pocket, whose turn (one role) comes once the
    test has placed the holds."""
    pocket = Pocket(env=env)
    try:
        start.wait(PATIENCE_SECONDS)  # Every process has started.
        start.wait(PATIENCE_SECONDS)  # The holds are placed.
        return race(pocket, role, wallet_id)
    finally:
        pocket.close()


def test_capture_void_and_expiry_racing_in_processes_end_each_hold_once(
    sql_settings: Settings,
) -> None:
    pocket = Pocket(env=dict(sql_settings.env))
    try:
        wallet_id = funded(pocket, "1000")
        context = multiprocessing.get_context("spawn")
        env = dict(sql_settings.env)
        with (
            context.Manager() as manager,
            ProcessPoolExecutor(len(ROLES), mp_context=context) as processes,
        ):
            start = manager.Barrier(len(ROLES) + 1)
            futures = [
                processes.submit(racing_process, env, wallet_id, role, start)
                for role in ROLES
            ]
            start.wait(PATIENCE_SECONDS)
            expires_at = utcnow() + timedelta(seconds=1.5)
            for _ in range(8):
                place(pocket, wallet_id, "10", expires_at=expires_at)
            start.wait(PATIENCE_SECONDS)
            runs = [f.result(timeout=PATIENCE_SECONDS) for f in futures]
        outcomes = [outcome for run in runs for outcome in run]
        check_each_hold_ended_once(pocket, wallet_id, outcomes, 8)
    finally:
        pocket.close()


@pytest.mark.parametrize("ending", ["capture", "void"])
def test_a_capture_or_void_past_the_expiry_records_it_and_is_told_expired(
    pocket: Pocket, ending: str
) -> None:
    wallet_id = funded(pocket, "100")
    expires_at = utcnow() + timedelta(seconds=1.1)
    hold = place(pocket, wallet_id, "30", expires_at=expires_at)
    time.sleep(max(0.0, expires_at.timestamp() - time.time()))
    command: Command = (CaptureHold if ending == "capture" else VoidHold)(
        wallet_id=wallet_id, hold_id=hold.id, command_id="late"
    )
    send: Callable[[Command], HoldInfo] = getattr(pocket, f"{ending}_hold")
    for _ in range(2):  # Sent again, it is told the same from its record.
        with pytest.raises(HoldEnded) as refused:
            send(command)
        assert refused.value.status == "expired"
    # Its expiry is recorded once: the follower's own expiry hears it ended.
    with pytest.raises(HoldEnded) as refused:
        pocket.expire_hold(
            ExpireHold(
                wallet_id=wallet_id, hold_id=hold.id, command_id=expiry_key(hold.id)
            )
        )
    assert refused.value.status == "expired"
    assert endings(pocket, wallet_id) == {hold.id: ["expired"]}
    wallet = pocket.get_wallet(wallet_id)
    assert (wallet.balance, wallet.held, wallet.available) == (
        D("100.00"),
        D("0.00"),
        D("100.00"),
    )


# A capture never takes more than its hold


def test_a_capture_of_more_than_the_hold_is_refused_and_changes_nothing(
    pocket: Pocket,
) -> None:
    wallet_id = funded(pocket, "100")
    hold = place(pocket, wallet_id, "30")
    before = pocket.get_wallet(wallet_id)
    with pytest.raises(CaptureExceedsHold):
        pocket.capture_hold(
            CaptureHold(wallet_id=wallet_id, hold_id=hold.id, amount=D("30.01"))
        )
    assert pocket.get_wallet(wallet_id) == before
    assert pocket.hold(wallet_id, hold.id).status == "open"


def two_captures_of_part(capturers: list[Pocket], wallet_id: UUID) -> None:
    """Two captures of part of each of ten holds at once: one takes its part,
    the other hears the hold was captured."""
    holds = [place(capturers[0], wallet_id, "10") for _ in range(10)]
    start = threading.Barrier(2)

    told: list[object] = []

    def capture(n: int) -> list[str]:
        pocket = capturers[n % len(capturers)]
        start.wait()
        heard = []
        for hold in holds:
            try:
                command = CaptureHold(
                    wallet_id=wallet_id, hold_id=hold.id, amount=D(f"{n + 6}")
                )
                heard.append(f"ok {pocket.capture_hold(command).captured}")
            except HoldEnded as ended:
                told.append(ended.hold)
                heard.append(f"ended {ended.status}")
        return heard

    with ThreadPoolExecutor(2) as threads:
        first, second = threads.map(capture, range(2))
    # The loser is told the hold as the winner ended it.
    assert len(told) == 10
    for hold in told:
        assert isinstance(hold, HoldInfo)
        assert (hold.status, hold.captured) in (("captured", D(6)), ("captured", D(7)))
    for one, other in zip(first, second, strict=True):
        assert sorted([one, other])[0] == "ended captured"
        assert sorted([one, other])[1] in ("ok 6.00", "ok 7.00")
    taken = sum(D(o[3:]) for o in first + second if o.startswith("ok"))
    wallet = capturers[0].get_wallet(wallet_id)
    assert (wallet.balance, wallet.held) == (D("1000") - taken, D("0.00"))
    assert all(len(kinds) == 1 for kinds in endings(capturers[0], wallet_id).values())


def test_two_captures_of_part_at_once_one_wins_the_other_hears_captured(
    pocket: Pocket,
) -> None:
    two_captures_of_part([pocket], funded(pocket, "1000"))


def test_two_captures_of_part_from_two_processes_one_wins(
    sql_settings: Settings,
) -> None:
    apps = [Pocket(env=dict(sql_settings.env)) for _ in range(2)]
    try:
        two_captures_of_part(apps, funded(apps[0], "1000"))
    finally:
        for app in apps:
            app.close()


# The daily limit counts open holds


def test_the_daily_limit_counts_open_holds_and_a_void_frees_the_room(
    pocket: Pocket,
) -> None:
    wallet_id = funded(pocket, "1000")
    pocket.set_daily_limit(SetDailyLimit(wallet_id=wallet_id, daily_limit=D("100")))
    hold = place(pocket, wallet_id, "60")
    assert draw(pocket, wallet_id, "40").balance == D("960.00")
    with pytest.raises(DailyLimitExceeded) as refused:
        draw(pocket, wallet_id, "0.01")
    assert refused.value.limit == D("100.00")
    assert "100.00 a day" in str(refused.value)
    with pytest.raises(DailyLimitExceeded):
        place(pocket, wallet_id, "0.01")
    pocket.void_hold(VoidHold(wallet_id=wallet_id, hold_id=hold.id))
    assert draw(pocket, wallet_id, "60").balance == D("900.00")
    with pytest.raises(DailyLimitExceeded):
        draw(pocket, wallet_id, "0.01")


def test_holds_and_draws_at_once_never_pass_the_daily_limit(pocket: Pocket) -> None:
    wallet_id = funded(pocket, "5000")
    pocket.set_daily_limit(SetDailyLimit(wallet_id=wallet_id, daily_limit=D("3000")))
    start = threading.Barrier(16)

    def run(_: int) -> Counter[str]:
        start.wait()
        outcomes: Counter[str] = Counter()
        for act in (
            lambda: place(pocket, wallet_id, "1000"),
            lambda: draw(pocket, wallet_id, "1000"),
        ):
            try:
                act()
                outcomes["ok"] += 1
            except DailyLimitExceeded:
                outcomes["refused"] += 1
        return outcomes

    with ThreadPoolExecutor(16) as threads:
        outcomes = sum(threads.map(run, range(16)), Counter[str]())
    assert outcomes == {"ok": 3, "refused": 29}
    wallet = pocket.get_wallet(wallet_id)
    assert wallet.balance - wallet.held == wallet.available == D("2000.00")


# A keyed command runs once


def test_resent_hold_commands_answer_the_same_and_change_nothing(
    pocket: Pocket,
) -> None:
    wallet_id = funded(pocket, "100")
    placed = place(pocket, wallet_id, "30", command_id="place-1")
    version = pocket.get_wallet(wallet_id).version
    again = place(pocket, wallet_id, "30", command_id="place-1")
    assert (again, again.replayed, placed.replayed) == (placed, True, False)
    assert pocket.get_wallet(wallet_id).version == version
    assert len(pocket.open_holds(wallet_id)) == 1
    other = place(pocket, wallet_id, "20", command_id="place-2")

    capture = CaptureHold(
        wallet_id=wallet_id, hold_id=placed.id, amount=D("12.5"), command_id="cap-1"
    )
    void = VoidHold(wallet_id=wallet_id, hold_id=other.id, command_id="void-1")
    sends: list[Callable[[], HoldInfo]] = [
        lambda: pocket.capture_hold(capture),
        lambda: pocket.void_hold(void),
    ]
    for send in sends:
        first = send()
        after = pocket.get_wallet(wallet_id)
        resent = send()
        assert (resent, resent.replayed) == (first, True)
        assert pocket.get_wallet(wallet_id) == after
    wallet = pocket.get_wallet(wallet_id)
    assert (wallet.balance, wallet.held) == (D("87.50"), D("0.00"))


def test_a_hold_commands_key_reused_for_another_command_is_refused(
    pocket: Pocket,
) -> None:
    wallet_id = funded(pocket, "100")
    hold = place(pocket, wallet_id, "30", command_id="k")
    version = pocket.get_wallet(wallet_id).version
    reuses: list[Callable[[], object]] = [
        lambda: place(pocket, wallet_id, "31", command_id="k"),
        lambda: pocket.capture_hold(
            CaptureHold(wallet_id=wallet_id, hold_id=hold.id, command_id="k")
        ),
        lambda: pocket.void_hold(
            VoidHold(wallet_id=wallet_id, hold_id=hold.id, command_id="k")
        ),
        lambda: pocket.draw_money(
            DrawMoney(
                wallet_id=wallet_id, amount=D("1"), destination="x", command_id="k"
            )
        ),
    ]
    for reuse in reuses:
        with pytest.raises(IdempotencyKeyReused):
            reuse()
    assert pocket.get_wallet(wallet_id).version == version
    assert pocket.hold(wallet_id, hold.id).status == "open"


def test_the_same_hold_sent_from_two_processes_at_once_is_placed_once(
    sql_settings: Settings,
) -> None:
    apps = [Pocket(env=dict(sql_settings.env)) for _ in range(2)]
    try:
        wallet_id = funded(apps[0], "100")
        start = threading.Barrier(2)

        def send(app: Pocket) -> list[HoldInfo]:
            start.wait()
            return [
                place(app, wallet_id, "1", command_id=f"hold-{n}") for n in range(20)
            ]

        with ThreadPoolExecutor(2) as threads:
            first, second = threads.map(send, apps)
        assert [h.id for h in first] == [h.id for h in second]
        wallet = apps[1].get_wallet(wallet_id)
        assert (wallet.balance, wallet.held) == (D("100.00"), D("20.00"))
        assert len(endings(apps[0], wallet_id)) == 20
    finally:
        for app in apps:
            app.close()


# A capture for another wallet is a transfer


def test_a_hold_for_another_wallet_captured_in_part_is_a_transfer(
    pocket: Pocket,
) -> None:
    sender, receiver = funded(pocket, "100", "payer"), funded(pocket, "5", "payee")
    hold = place(pocket, sender, "40", receiver_id=receiver)
    assert pocket.get_wallet(receiver).balance == D("5.00")
    captured = pocket.capture_hold(
        CaptureHold(wallet_id=sender, hold_id=hold.id, amount=D("25"))
    )
    assert (captured.status, captured.captured, captured.released) == (
        "captured",
        D("25.00"),
        D("15.00"),
    )
    assert captured.receiver == pocket.get_wallet(receiver)
    assert pocket.get_wallet(receiver).balance == D("30.00")
    wallet = pocket.get_wallet(sender)
    assert (wallet.balance, wallet.held, wallet.available) == (
        D("75.00"),
        D("0.00"),
        D("75.00"),
    )
    # The released 15 is free again: all of the 75 may go.
    assert draw(pocket, sender, "75").balance == D("0.00")
    sent = pocket.history(sender).transactions
    received = pocket.history(receiver).transactions
    assert [(t.type, t.amount, t.balance) for t in sent] == [
        ("IN", D("100.00"), D("100.00")),
        ("HOLD", D("40.00"), D("100.00")),
        ("OUT", D("25.00"), D("75.00")),
        ("OUT", D("75.00"), D("0.00")),
    ]
    assert [(t.type, t.amount, t.balance) for t in received] == [
        ("IN", D("5.00"), D("5.00")),
        ("IN", D("25.00"), D("30.00")),
    ]
    out, into = sent[2], received[1]
    assert out.transfer_id == into.transfer_id == captured.transfer_id
    assert out.transfer_id is not None
    assert (out.released, out.outcome, out.hold_id) == (D("15.00"), "captured", hold.id)
    assert (out.counterparty_wallet_id, into.counterparty_wallet_id) == (
        receiver,
        sender,
    )
    assert (out.counterparty_user_id, into.counterparty_user_id) == ("payee", "payer")


# Snapshots taken while holds change


def test_a_wallet_loads_from_its_snapshot_with_the_holds_its_events_say(
    sql_settings: Settings,
) -> None:
    pocket = Pocket(env=dict(sql_settings.env))
    try:
        wallet_id = funded(pocket, "1000")
        while pocket.get_wallet(wallet_id).version < 90:
            place(pocket, wallet_id, "1")
        start = threading.Barrier(8)

        def churn(_: int) -> None:
            start.wait()
            for _ in range(4):
                hold = place(pocket, wallet_id, "1")
                command = CaptureHold(wallet_id=wallet_id, hold_id=hold.id)
                pocket.capture_hold(command)

        with ThreadPoolExecutor(8) as threads:
            list(threads.map(churn, range(8)))
        assert pocket.snapshots is not None
        assert list(pocket.snapshots.get(wallet_id))  # Taken at 100.
        other = Pocket(env=dict(sql_settings.env))
        try:
            assert other.get_wallet(wallet_id) == pocket.get_wallet(wallet_id)
            assert other.open_holds(wallet_id) == pocket.open_holds(wallet_id)
            assert len(other.open_holds(wallet_id)) == 88
        finally:
            other.close()
    finally:
        pocket.close()

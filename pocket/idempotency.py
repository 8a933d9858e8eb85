"""Idempotency: a command sent again under its key runs once, and every sending of
it gets the first answer.

A keyed command's answer is kept in a CommandRecord, saved in the transaction that
saves the command's events, so there is never one without the other. A command
that finds its record ran before is answered from the record and saves nothing
(pocket.unitofwork). The same key on a different command is refused, and so is a
key whose command is running in this process right now (its answer is not known
yet).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository

from pocket.domainmodel import CommandRecord
from pocket.results import HoldInfo, Result, TransferInfo, WalletInfo


@dataclass(frozen=True)
class Idempotency:
    """A client-chosen command id, and what the command was, to detect reuse."""

    command_id: str
    fingerprint: str


def idempotency(command_id: str | None, *parts: object) -> Idempotency | None:
    """What makes a command idempotent: its id, and a fingerprint of its content."""
    if command_id is None:
        return None
    text = "\x1f".join(str(part) for part in parts)
    return Idempotency(command_id, hashlib.sha256(text.encode()).hexdigest())


class KeyedCommands:
    """An application's keyed commands: those that ran, found by their records,
    and those running in this process now, claimed."""

    def __init__(
        self,
        repository: Repository[UUID],
        *,
        reused: Callable[[str], Exception],
        in_flight: Callable[[str], Exception],
    ) -> None:
        self.repository = repository
        # The errors to raise are the application's: its callers catch them there.
        self.reused = reused
        self.in_flight = in_flight
        self.running: set[str] = set()
        self.lock = threading.Lock()

    def replay(self, key: Idempotency) -> Result | None:
        """The answer of an earlier run of this command, if it ran."""
        try:
            record: object = self.repository.get(CommandRecord.id_for(key.command_id))
        except AggregateNotFoundError:
            return None
        assert isinstance(record, CommandRecord)
        if record.fingerprint != key.fingerprint:
            raise self.reused(key.command_id)
        return dataclasses.replace(result_from_record(record.result), replayed=True)

    @staticmethod
    def record(key: Idempotency, result: Result) -> CommandRecord:
        """The record that makes the command's reruns change nothing."""
        record_id = CommandRecord.id_for(key.command_id)
        return CommandRecord(
            key.command_id, key.fingerprint, result_to_record(result), id=record_id
        )

    def claim(self, key: Idempotency | None) -> AbstractContextManager[None]:
        """Holds a key while its command runs; refuses it to others meanwhile
        (a command with no key holds nothing: that costs nothing)."""
        return contextlib.nullcontext() if key is None else self._claim(key)

    @contextlib.contextmanager
    def _claim(self, key: Idempotency) -> Iterator[None]:
        with self.lock:
            if key.command_id in self.running:
                raise self.in_flight(key.command_id)
            self.running.add(key.command_id)
        try:
            yield
        finally:
            with self.lock:
                self.running.discard(key.command_id)


def result_to_record(result: Result) -> dict[str, Any]:
    """A command's answer as its record keeps it."""
    if isinstance(result, WalletInfo):
        return {"wallet": wallet_to_record(result)}
    if isinstance(result, HoldInfo):
        hold = {
            f.name: getattr(result, f.name)
            for f in dataclasses.fields(result)
            if f.name not in ("wallet", "receiver", "replayed")
        }
        hold["wallet"] = (
            None if result.wallet is None else wallet_to_record(result.wallet)
        )
        hold["receiver"] = (
            None if result.receiver is None else wallet_to_record(result.receiver)
        )
        return {"hold": hold}
    return {
        "transfer": {
            "id": result.id,
            "amount": result.amount,
            "description": result.description,
            "sender": wallet_to_record(result.sender),
            "receiver": wallet_to_record(result.receiver),
        }
    }


def wallet_to_record(wallet: WalletInfo) -> dict[str, Any]:
    """A WalletInfo as a command record keeps it: plain values."""
    return {
        "aggregate_id": wallet.aggregate_id,
        "user_id": wallet.user_id,
        "balance": wallet.balance,
        "version": wallet.version,
        "closed": wallet.closed,
        "modified_on": wallet.modified_on,
        "held": wallet.held,
        "credit_limit": wallet.credit_limit,
        "daily_limit": wallet.daily_limit,
        "alert_below": wallet.alert_below,
    }


def result_from_record(data: dict[str, Any]) -> Result:
    """The answer a command record kept (records made before holds keep no
    held amount or limits: none of either then)."""
    if "wallet" in data:
        return WalletInfo(**data["wallet"])
    if "hold" in data:
        hold = dict(data["hold"])
        for side in ("wallet", "receiver"):
            if hold[side] is not None:
                hold[side] = WalletInfo(**hold[side])
        return HoldInfo(**hold)
    recorded = data["transfer"]
    return TransferInfo(
        id=recorded["id"],
        amount=recorded["amount"],
        description=recorded["description"],
        sender=WalletInfo(**recorded["sender"]),
        receiver=WalletInfo(**recorded["receiver"]),
    )

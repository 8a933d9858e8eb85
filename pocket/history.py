"""A wallet's history read newest first: the order a person wants it in (the
latest movement on the first page), where Pocket.history reads oldest first, the
order of the log and of the API's default."""

from __future__ import annotations

from uuid import UUID

from pocket.application import HISTORY_PAGE_MAX, Pocket
from pocket.results import HistoryPage, to_history_entry


def page_newest_first(
    pocket: Pocket, wallet_id: UUID, *, before: int = 0, limit: int = 50
) -> HistoryPage:
    """A page of the wallet's money movements before a position (0: from the
    latest), newest first.

    As Pocket.history does the other way, it reads only the page's own events,
    so that a page costs the same at either end of a long history; a position
    stays where it is as new events arrive, so a page's cursor keeps pointing at
    the entries after the ones it showed.
    """
    limit = max(1, min(limit, HISTORY_PAGE_MAX))
    wallet = pocket.get_wallet(wallet_id)
    # Only two events are not money movements (opening and closing), so
    # limit + 3 events hold at least limit + 1 movements when there are that
    # many: enough to tell whether another page follows.
    events = pocket.events.get(
        wallet_id, lte=before - 1 if before > 0 else None, desc=True, limit=limit + 3
    )
    entries = [h for e in events if (h := to_history_entry(e)) is not None]
    return HistoryPage(wallet, entries[:limit], len(entries) > limit)

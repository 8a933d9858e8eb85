"""Pocket: event-sourced wallets, every balance audited, explained and replayable."""

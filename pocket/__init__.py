"""Pocket: event-sourced wallets, every balance audited, explained and replayable."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pocket")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

"""Programs around the package, run from a checkout and never shipped: the
benchmark (`python -m tools.bench`), the HTTP profiler, and the throwaway
resources they and the tests share (tools/scratch.py)."""

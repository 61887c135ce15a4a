"""Real servers on loopback for the tests, one module each, started by session fixtures.

Each module owns one server: it writes the config into a temp dir, starts the
process with ``start_new_session``, waits until it answers, and stops it with
SIGTERM (SIGKILL after 10 s). Shared helpers live in ``tests/servers/process.py``.
"""

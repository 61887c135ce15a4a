"""One module per silo. Each public task is a function ``task(clipboard) -> clipboard``
marked with ``clipboard.worker.task``; it runs in its own process (forked from
the warm fork server) and may block as it likes. Return None to leave the
clipboard unchanged; raise ``clipboard.errors.StepFailed`` to fail with a reason.
Settings come from ``clipboard.config.current()``.
"""

"""One module per silo. Each public task is a function ``task(clipboard) -> clipboard``
marked with ``clipboard.worker.task``; it runs in its own process (forked from
the warm fork server) and may block as it likes. Return None to leave the
clipboard unchanged; raise ``clipboard.errors.StepFailed`` to fail with a reason.
Settings come from ``clipboard.config.current()`` as typed sections
(``current().monitoring.url``); each module names the sections it reads in a
module-level ``SETTINGS`` tuple (``clipboard.settings``), which the catalog carries
so ``jarvis check-config`` can say which worker a broken section would stop.
"""

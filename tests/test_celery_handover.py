"""What a step's message carries and how a worker reads it back, with the real catalog
and a worker's real ``StepHost`` (its fork servers), no broker: a Python task's
clipboard goes as JSON when JSON says it exactly (a worker parses that far faster
than YAML), an executable's as the YAML it is handed, and either way the worker hands
the step exactly the clipboard the engine had."""
from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kombu.exceptions import OperationalError

from clipboard import config as config_mod
from clipboard import document
from clipboard.celery_runner import CeleryRunner
from clipboard.celery_worker import StepHost
from clipboard.runner import Runner

pytestmark = pytest.mark.servers  # starts the catalog and fork server processes

WORKERS = Path(__file__).parent / "workers"
PLAIN = {"instance": {"hostname": "loki", "note": "päivää\nline two"}, "notes": {"n": [1, None]}}
DATED = {"instance": {"hostname": "loki"}, "notes": {"built": datetime.date(2011, 4, 19)}}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> config_mod.Config:
    path = tmp_path_factory.mktemp("handover") / "jarvis.yaml"
    path.write_text(yaml.safe_dump({"runner": {
        "backend": "celery", "worker_dirs": [str(WORKERS)],
        "celery": {"broker_url": "redis://127.0.0.1:9/0"}}}))
    return config_mod.load(path)


def sent(config: config_mod.Config, step: str, clipboard: dict[str, Any]) -> str:
    """The clipboard text ``CeleryRunner.run`` puts in the step's message."""
    payloads: list[dict[str, Any]] = []

    def hand_over(_task_id: str, _queue: str, payload: dict[str, Any]) -> bool:
        payloads.append(payload)
        raise OperationalError("no broker in this test")

    async def go() -> None:
        runner = CeleryRunner(config)
        await Runner.start(runner)  # the catalog: no result backend to listen to
        runner._hand_over = hand_over  # type: ignore[method-assign]
        try:
            result = await runner.run(step, clipboard, timeout=10,
                                      text=document.dump(clipboard))
            assert "could not hand the step to a Celery worker" in str(result.error)
        finally:
            await Runner.close(runner)
    asyncio.run(go())
    return str(payloads[0]["text"])


@pytest.fixture(scope="module")
def host(config: config_mod.Config) -> Iterator[StepHost]:
    found = StepHost(config)
    found.start()
    yield found
    found.close()


def test_a_python_tasks_clipboard_goes_as_json_when_json_says_it(
        config: config_mod.Config) -> None:
    assert sent(config, "core:echo", PLAIN) == document.dump_json(PLAIN)
    assert sent(config, "core:echo", DATED) == document.dump(DATED)  # a date: YAML


def test_an_executables_clipboard_goes_as_the_yaml_it_is_handed(
        config: config_mod.Config) -> None:
    assert sent(config, "shellworker:echo", PLAIN) == document.dump(PLAIN)


@pytest.mark.parametrize("clipboard", [PLAIN, DATED])
@pytest.mark.parametrize("step", ["core:echo", "shellworker:echo"])
def test_a_worker_hands_the_step_exactly_the_clipboard_sent(
        config: config_mod.Config, host: StepHost, step: str,
        clipboard: dict[str, Any]) -> None:
    text = document.dump(clipboard)
    message = {"step": step, "timeout": 10,
               "text": (document.dump_json(clipboard) or text) if step.startswith("core")
               else text}
    result = host.run(f"jarvis-{step}", message)
    assert result.ok, result.error
    assert result.text is not None
    assert document.load(result.text) == clipboard


def test_a_worker_refuses_a_clipboard_over_its_node_limit(host: StepHost) -> None:
    wide = {"instance": {"hostname": "loki"},
            "notes": {"n": list(range(host.runner.max_nodes + 1))}}
    result = host.run("jarvis-wide", {"step": "core:echo", "timeout": 10,
                                      "text": document.dump_json(wide)})
    assert not result.ok
    assert result.error is not None and "expands to more than" in result.error

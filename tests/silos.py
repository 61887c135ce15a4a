"""Driving a worker task the way the runner does, for the silo tests: a fresh
process, the clipboard as YAML on stdin, the configuration named by JARVIS_CONFIG."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def run_worker(step: str, clipboard: dict[str, Any], config: dict[str, Any], tmp_path: Path,
               env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``step`` in a new process; stdout is the new clipboard, stderr the log."""
    path = tmp_path / "jarvis.yaml"
    path.write_text(yaml.safe_dump(config))
    full_env = {**os.environ, "JARVIS_CONFIG": str(path), **(env or {})}
    return subprocess.run([sys.executable, "-m", "clipboard.worker", step],
                          input=yaml.safe_dump(clipboard), capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def output(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The clipboard a successful worker printed (failing the test with its log otherwise)."""
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict), f"no clipboard on stdout; log: {result.stderr}"
    return data

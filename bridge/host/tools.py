"""Run promtool and amtool, the judges of what we generate."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from bridge.core.errors import ToolError

PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
}


def find_tool(name: str) -> str:
    """Absolute path of a Prometheus tool, or ToolError saying which package provides it."""
    path = shutil.which(name)
    if path is None:
        package = PACKAGES.get(name, name)
        raise ToolError(name, f"not found on PATH; install the Debian package '{package}'")
    return path


@dataclass(frozen=True, slots=True)
class ToolRun:
    """The outcome of one tool invocation."""

    args: tuple[str, ...]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_tool(name: str, *args: str, timeout: float = 60.0) -> ToolRun:
    """Run `name args...`, capturing stdout and stderr together."""
    argv = (find_tool(name), *args)
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ToolError(name, f"did not finish within {timeout:.0f}s") from None
    return ToolRun((name, *args), proc.returncode, (proc.stdout + proc.stderr).strip())

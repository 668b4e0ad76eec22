"""`python -m sidecar` runs on uvloop where it is installed, else on asyncio's own loop."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest

from sidecar.__main__ import new_event_loop


def test_the_sidecar_runs_on_uvloop_when_it_is_installed():
    uvloop = pytest.importorskip("uvloop")
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_without_uvloop_the_sidecar_uses_asyncios_own_loop(monkeypatch):
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("uvloop is not built for this platform")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    loop = new_event_loop()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()

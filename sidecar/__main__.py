"""`python -m sidecar`: read the environment, start the app, or explain why not."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from sidecar.app import create_app
from sidecar.config import Config, ConfigError
from sidecar.observability import configure_logging, logger


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (it spends less CPU per request)."""
    try:
        import uvloop
    except ImportError:  # not built for this platform: asyncio's own loop
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main() -> int:
    configure_logging()
    try:
        config = Config.from_env()
    except ConfigError as problem:
        print(problem, file=sys.stderr)
        return 2
    for warning in config.warnings:
        logger().warning(warning)
    loop = new_event_loop()
    logger().info(
        "sidecar starting",
        extra={
            "port": config.port,
            "env": config.env,
            "transport": config.transport,
            "event_loop": type(loop).__module__.split(".")[0],
        },
    )
    web.run_app(create_app(config), host=config.host, port=config.port, print=None, loop=loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())

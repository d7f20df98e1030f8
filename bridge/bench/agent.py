"""``python -m bridge.bench.agent``: the built-in local agent in its own process.

What ``bridge local-agent`` runs (``serve_local_agent``, default options), on a free port,
optionally pinned to one CPU. Prints one JSON line ``{"url": ..., "pid": ...}`` once it
listens, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from typing import NoReturn

from bridge.bench.server import pin


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m bridge.bench.agent")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args(argv)
    pin(args.cpu)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve())


async def _serve() -> NoReturn:
    from bridge.local_agent import serve_local_agent

    server = await serve_local_agent("127.0.0.1", 0)
    print(json.dumps({"url": server.url, "pid": os.getpid()}), flush=True)
    try:
        while True:
            # The server keeps every session it accepted (for tests); a benchmark opens
            # hundreds, each holding the audio it sent. Live ones stay referenced.
            await asyncio.sleep(10)
            server.sessions.clear()
    finally:
        await server.close()


if __name__ == "__main__":
    main()

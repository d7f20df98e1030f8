"""``bridge``: serve | simulate | local-agent | bench | call | twilio | doctor.

bridge serve                  the bridge for real calls (settings from the environment)
bridge simulate [caller.wav]  a whole simulated Twilio call on this machine, no keys needed
bridge local-agent            the built-in Realtime look-alike, on its own
bridge bench                  load, latency and audio-quality figures (see README)
bridge call +1…               place an outbound call through Twilio (--agent, --from, --amd)
bridge twilio numbers|setup   list the account's numbers; point one at PUBLIC_URL (and undo)
bridge doctor                 check a deployment: public URL, Twilio, OpenAI key, clock, port
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.ops.commands import add_parsers as add_ops_parsers
from bridge.ops.commands import run as run_ops

logger = logging.getLogger("bridge")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _key_presses(text: str) -> list[tuple[float, str]]:
    """``1.5:1,1.7:#`` → ``[(1.5, "1"), (1.7, "#")]``."""
    presses = []
    for part in text.split(","):
        when, _, key = part.strip().partition(":")
        if len(key) != 1 or key not in "0123456789*#":
            raise argparse.ArgumentTypeError(f"{part!r}: expected SECONDS:KEY, KEY one of 0-9 * #")
        try:
            presses.append((float(when), key))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: {when!r} is not a number") from None
    return presses


def _workers(text: str) -> int:
    from bridge.workers import parse_workers

    return parse_workers(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bridge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bridge")
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", type=int, help="overrides PORT")
    serve.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="overrides WORKERS: worker processes (default 1; 0 or auto: one per core)",
    )

    sim = sub.add_parser("simulate", help="simulate a Twilio call against a local bridge")
    sim.add_argument("caller_wav", nargs="?", type=Path, default=FIXTURES / "caller-hello.wav")
    sim.add_argument(
        "--out",
        type=Path,
        default=Path("out/caller-heard.wav"),
        help="where to write what the caller heard (default: %(default)s)",
    )
    sim.add_argument("--tail", type=float, default=3.0, help="seconds to listen after speaking")
    sim.add_argument(
        "--expire-after",
        type=float,
        metavar="SECONDS",
        help="the local agent expires every model session after SECONDS (watch a reconnect)",
    )
    sim.add_argument(
        "--dtmf",
        type=_key_presses,
        metavar="T:KEY,…",
        help="keypad presses to send, e.g. 1.5:1,1.7:2,1.9:# (seconds into the call)",
    )
    sim.add_argument(
        "--silent",
        type=float,
        metavar="SECONDS",
        help="the caller says nothing for SECONDS (watch the silence nudges)",
    )
    sim.add_argument(
        "--tool-server",
        action="store_true",
        help="serve a demo endpoint for the agents file's tools (where their URLs point)",
    )
    sim.add_argument(
        "--tool-delay", type=float, default=0.0, help="seconds the demo endpoint takes"
    )
    sim.add_argument(
        "--twilio-stand-in",
        action="store_true",
        help="send Twilio REST calls (transfer_call) to a local stand-in of Twilio's API",
    )

    agent = sub.add_parser("local-agent", help="run the built-in local Realtime agent")
    agent.add_argument("--host", default="127.0.0.1")
    agent.add_argument("--port", type=int, default=8765)

    add_ops_parsers(sub)  # call, twilio, doctor (bridge.ops.commands)

    bench = sub.add_parser("bench", help="benchmarks: load, latency, audio quality")
    bench.add_argument("rest", nargs=argparse.REMAINDER)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # argparse's REMAINDER drops options that come first (``bench --quick``): the
        # benchmark parses its own.
        from bridge.bench.main import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level, settings.log_format)

    match args.command:
        case "serve":
            from bridge.server import serve_forever

            settings = settings.with_(
                host=args.host or settings.host, port=args.port or settings.port
            )
            if args.workers is not None:
                settings = settings.with_(workers=args.workers)
            if settings.workers != 1:
                from bridge.workers import serve_workers, worker_count

                if (count := worker_count(settings.workers)) > 1:
                    return serve_workers(settings, count)
            return serve_forever(settings)
        case "simulate":
            from bridge.demo import run_demo

            return asyncio.run(
                run_demo(
                    settings,
                    args.caller_wav,
                    args.out,
                    tail_s=args.tail,
                    expire_after_s=args.expire_after,
                    dtmf=args.dtmf,
                    silent_s=args.silent,
                    tool_server=args.tool_server,
                    tool_delay_s=args.tool_delay,
                    twilio_stand_in=args.twilio_stand_in,
                )
            )
        case "local-agent":
            return asyncio.run(_local_agent(args.host, args.port))
        case "call" | "twilio" | "doctor":
            return run_ops(args, settings)
        case "bench":
            from bridge.bench.main import main as bench_main

            return bench_main(args.rest)
    return 2


def _setup_logging(level: str, log_format: str = "text") -> None:
    if log_format == "json":
        from bridge.logs import json_handler

        logging.basicConfig(level=level, handlers=[json_handler()])
    else:
        logging.basicConfig(
            level=level,
            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
    if level != "DEBUG":
        # The library's per-connection lines repeat ours, which name the call.
        logging.getLogger("websockets").setLevel(logging.WARNING)
        # Alembic's set-up lines (plugins, migration context) at every start; the store
        # logs the schema it is at and any migration it made.
        logging.getLogger("alembic").setLevel(logging.WARNING)


async def _local_agent(host: str, port: int) -> int:
    from bridge.local_agent import serve_local_agent

    server = await serve_local_agent(host, port)
    logger.info("local agent listening on %s", server.url)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The operator subcommands of ``bridge``: ``call``, ``twilio numbers|setup``, ``doctor``.

Owns their arguments and their printed output; the work is in ``bridge.outbound.place``,
``bridge.ops.numbers`` and ``bridge.ops.doctor``. Must not touch the server. Prints
numbers (the operator asked for them), never a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.outbound.place import BadTarget
from bridge.twilio_api import TwilioApiError

COMMANDS = ("call", "twilio", "doctor")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    call = sub.add_parser(
        "call",
        help="place an outbound call through Twilio",
        description="Place an outbound call. The server that takes its media stream must "
        "share STREAM_TOKEN_SECRET with this command (it mints the stream token).",
    )
    call.add_argument("to", help="an E.164 number (+15551234567) or a sip: URI")
    call.add_argument("--agent", help="the agent that talks (default: the default agent)")
    call.add_argument(
        "--from", dest="from_", metavar="NUMBER", help="the caller ID (default: TWILIO_CALLER_ID)"
    )
    call.add_argument(
        "--amd",
        action="store_true",
        help="answering-machine detection: on a machine, leave the agent's voicemail",
    )

    twilio = sub.add_parser("twilio", help="the Twilio account's numbers")
    what = twilio.add_subparsers(dest="twilio_command", required=True)
    what.add_parser("numbers", help="list the numbers and where their voice URLs point")
    setup = what.add_parser("setup", help="point a number's webhooks at PUBLIC_URL")
    setup.add_argument("--number", help="the number to set up, E.164")
    setup.add_argument(
        "--undo", action="store_true", help="put back what 'setup --number' replaced"
    )
    setup.add_argument(
        "--restore", type=Path, metavar="FILE", help="put back what FILE (from setup) holds"
    )
    setup.add_argument(
        "--save-dir",
        type=Path,
        default=Path("."),
        help="where the undo file goes (default: the current directory)",
    )

    sub.add_parser("doctor", help="check a deployment: URL, Twilio, OpenAI, clock, port")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        match args.command:
            case "call":
                return asyncio.run(_call(args, settings))
            case "twilio":
                return asyncio.run(_twilio(args, settings))
            case "doctor":
                return asyncio.run(_doctor(settings))
    except (BadTarget, ConfigError, TwilioApiError) as exc:
        print(f"bridge {args.command}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, BadTarget | ConfigError) else 1
    return 2


async def _call(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.outbound.place import place_call

    placed = await place_call(settings, args.to, agent=args.agent, from_=args.from_, amd=args.amd)
    amd = ", answering-machine detection on" if placed.machine_detection else ""
    print(f"Calling {placed.to} from {placed.from_} (agent {placed.agent}{amd})")
    print(f"Call SID: {placed.call_sid}")
    return 0


async def _twilio(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.ops import numbers

    if args.twilio_command == "numbers":
        found = await numbers.list_numbers(settings)
        if not found:
            print("This account has no phone numbers.")
        ours = settings.public_url or "\0"
        for number in found:
            mark = "  (this bridge)" if number.voice_url.startswith(ours) else ""
            print(f"{number.phone_number}  {number.friendly_name}")
            print(f"  voice: {number.voice_method or 'POST'} {number.voice_url or '(none)'}{mark}")
            print(f"  status callback: {number.status_callback or '(none)'}")
        return 0
    if args.restore is not None or args.undo:
        if args.restore is None and not args.number:
            raise BadTarget("--undo needs --number (or use --restore FILE)")
        saved = args.restore or numbers.undo_file(args.number, args.save_dir)
        number, changes = await numbers.restore(settings, saved)
        print(f"{number.phone_number}: restored from {saved}")
        print("\n".join(changes) if changes else "  nothing to change")
        return 0
    if not args.number:
        raise BadTarget("setup needs --number +1…")
    save_to = numbers.undo_file(args.number, args.save_dir)
    number, changes = await numbers.setup(settings, args.number, save_to)
    if not changes:
        print(f"{number.phone_number} already points at {settings.public_url}; nothing changed")
        return 0
    print(f"{number.phone_number} now points at this bridge:")
    print("\n".join(changes))
    print(f"Previous settings saved in {save_to}; undo with:")
    print(f"  bridge twilio setup --restore {save_to}")
    return 0


async def _doctor(settings: Settings) -> int:
    from bridge.ops.doctor import run_doctor

    checks = await run_doctor(settings)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.level == "FAIL"]
    print(f"{len(failed)} problem(s) found." if failed else "All checks passed.")
    return 1 if failed else 0

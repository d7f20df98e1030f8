"""``bridge bench --soak MINUTES``: calls at moderate load for a long time, with the model
dropping sessions under them, and what the process holds over time.

One process runs the bridge (the same uvicorn + Starlette stack, signatures and stream
tokens checked), the local agent with its fault switch ``drop_after_s`` (every session is
cut with no close frame that many seconds after it opens, so each call loses its model
session again and again) and ``--calls`` simulated callers that call back to back. Every
``--sample-every`` seconds it writes a row: calls done, live, model reconnects, resident
memory, asyncio tasks and open file descriptors of the process. The figures cover the
callers and the agent too, which only makes a leak easier to see. What must hold: after
the warm-up row, none of the three grows with the number of calls done.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.audio.wav import read_wav
from bridge.config import Settings
from bridge.harness import running_bridge, signed_settings
from bridge.local_agent import Faults, serve_local_agent
from bridge.sim.caller import simulate_call

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@dataclass
class Sample:
    t_s: float
    calls_done: int
    calls_failed: int
    live: int
    reconnects: int
    rss_kib: int
    tasks: int
    fds: int


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def soak(
    minutes: float, calls: int, drop_every_s: float, sample_every_s: float, tail_s: float
) -> list[Sample]:
    audio, rate = read_wav(FIXTURES / "caller-hello.wav")
    assert rate == 8000
    faults = Faults(drop_after_s=drop_every_s, drop_code=1006)
    agent = await serve_local_agent("127.0.0.1", 0, faults=faults)
    done = failed = 0
    samples: list[Sample] = []
    try:
        async with running_bridge(signed_settings(Settings()), model_url=agent.url) as bridge:
            services = bridge.services
            loop = asyncio.get_running_loop()
            start = loop.time()
            end = start + minutes * 60

            async def caller(n: int) -> None:
                nonlocal done, failed
                await asyncio.sleep(n * 0.5)  # staggered
                while loop.time() < end:
                    try:
                        result = await simulate_call(
                            bridge.base_url,
                            audio,
                            public_url=bridge.public_url,
                            auth_token=bridge.auth_token,
                            from_=f"+1555000{n:04d}",
                            tail_s=tail_s,
                        )
                        failed += result.closed_by != "caller"
                    except Exception as exc:  # counted and shown; the soak goes on
                        failed += 1
                        logging.getLogger(__name__).warning("call failed: %r", exc)
                    done += 1

            def sample() -> Sample:
                row = Sample(
                    t_s=loop.time() - start,
                    calls_done=done,
                    calls_failed=failed,
                    live=len(services.calls),
                    reconnects=services.metrics.model_reconnects,
                    rss_kib=_rss_kib(),
                    tasks=len(asyncio.all_tasks()),
                    fds=_fds(),
                )
                samples.append(row)
                print(render([row], header=len(samples) == 1), flush=True)
                return row

            workers = [asyncio.create_task(caller(n)) for n in range(calls)]
            sample()
            while loop.time() < end:
                await asyncio.wait(workers, timeout=min(sample_every_s, end - loop.time()))
                sample()
            await asyncio.gather(*workers)
            settle = loop.time() + 30.0  # the bridge ends each call as its caller hangs up
            while services.calls and loop.time() < settle:
                await asyncio.sleep(0.05)
            sample()  # every call over
    finally:
        await agent.close()
    return samples


def render(samples: list[Sample], *, header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            "| t (min) | calls done | failed | live | model reconnects | RSS MiB | tasks | fds |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for s in samples:
        lines.append(
            f"| {s.t_s / 60:.1f} | {s.calls_done} | {s.calls_failed} | {s.live} | "
            f"{s.reconnects} | {s.rss_kib / 1024:.1f} | {s.tasks} | {s.fds} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bridge bench --soak", description=__doc__)
    p.add_argument("--soak", type=float, required=True, metavar="MINUTES")
    p.add_argument("--calls", type=int, default=10, help="calls at once (default 10)")
    p.add_argument(
        "--drop-every", type=float, default=8.0, help="model sessions cut after S seconds"
    )
    p.add_argument("--sample-every", type=float, default=30.0, help="seconds between rows")
    p.add_argument("--tail", type=float, default=15.0, help="seconds each caller listens on")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    if args.soak <= 0 or args.calls < 1 or args.drop_every <= 0 or args.sample_every <= 0:
        p.error("--soak, --calls, --drop-every and --sample-every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    samples = asyncio.run(
        soak(args.soak, args.calls, args.drop_every, args.sample_every, args.tail)
    )
    table = render(samples)
    print(f"\nSoak: {args.calls} calls at once for {(time.monotonic() - started) / 60:.1f} min")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return 0

"""``bridge bench``: how many calls a box takes, what the bridge adds, how clean the audio is.

``main`` runs the ramp; ``procs`` starts and reads its processes: the server under test
(``server``: the bridge, or the minimal ``relay`` baseline) pinned to one core; the local
agent (``agent``) and the load generator (``load``: lean Twilio callers) on the other.
``probe`` is the small ASGI wrapper the server runs under for the figures ``/metrics.json``
does not keep (uplink jitter, event loop lag, GC pauses, metric resets, cProfile on
demand). ``figures`` turns measurements into figures and verdicts, ``quality`` computes
the PESQ figures; ``compare`` the side-by-side table of ``--compare`` (transcoding
bridge, μ-law pass-through bridge, relay); ``report`` prints the tables and writes the JSON.

Nothing here is imported by the bridge itself.
"""

"""Twilio caller simulator: plays Twilio's cloud against the bridge, over the wire only.

* ``bridge.sim.caller.simulate_call`` — one inbound call: webhook, TwiML, media stream.
* ``bridge.sim.far_end.FarEnd`` — sans-I/O model of Twilio's outbound playback and marks,
  and ``parse_outbound``, the strict check of what the bridge sends.
* ``bridge.sim.result`` — CallResult, timeline, clear records, ``format_timeline``.
"""

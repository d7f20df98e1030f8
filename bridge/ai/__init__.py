"""The bridge's side of the OpenAI Realtime API: events in and out (sans-I/O) and the client.

The built-in agent that plays the service locally is ``bridge.local_agent``; nothing here
imports it.
"""

"""Bridge phone calls and browser softphones to OpenAI Realtime voice agents."""

__version__ = "0.1.0"

"""Control plane: the HTTP webhooks that answer Twilio."""

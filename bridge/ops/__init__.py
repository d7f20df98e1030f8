"""Operator commands: ``bridge call``, ``bridge twilio numbers|setup``, ``bridge doctor``."""

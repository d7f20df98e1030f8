"""One module per schema revision, oldest first; each frozen once released."""

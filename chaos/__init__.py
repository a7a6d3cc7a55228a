"""The chaos soak (``make chaos``, ``python -m chaos``): mixed traffic against the service
while faults are injected, then checks of what it promised. See chaos/README.md."""

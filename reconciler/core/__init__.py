"""The pure core: the roster model, the live model, the diff, the plan and its brakes. It imports no I/O:
the adapters it needs are the ports in ports.py."""

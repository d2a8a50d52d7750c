"""Stand-ins for the external provider HTTP APIs (Melange, Bueno, Uklon).

Each provider runs as its own process, e.g. ``python -m simulators.melange``; see README.md.
"""

"""Stand-ins for the external provider HTTP APIs (Melange, Bueno, Uklon, Raketa).

Each provider runs as its own process, e.g. ``python -m simulators.melange``; see README.md.
"""

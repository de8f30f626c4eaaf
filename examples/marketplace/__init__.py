"""An example marketplace on broadcast_lifecycle: Starlette, python-socketio, SQLite or PostgreSQL.

``create_app(Settings.from_env())`` is the ASGI app; ``python -m marketplace serve`` runs it for a
browser and ``python -m marketplace demo`` runs a scripted scenario against it (``make serve``,
``make demo``). See README.md beside this file.
"""

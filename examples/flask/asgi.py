"""The Flask app behind every bastion guard, as one ASGI application.

Flask speaks WSGI; ``a2wsgi`` runs it inside an ASGI server, and ``Bastion`` wraps
that. Serve it with ``uvicorn asgi:app`` from this folder.
"""

from __future__ import annotations

from pathlib import Path

from a2wsgi import WSGIMiddleware
from app import app as flask_app

from bastion import Bastion

app = Bastion(WSGIMiddleware(flask_app), config=Path(__file__).with_name("bastion.yaml"))

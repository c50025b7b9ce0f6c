"""Django's ASGI application behind every bastion guard.

Serve it with ``uvicorn asgi:app`` from this folder. In a Django project of your
own, wrap the ``application`` of its ``asgi.py`` the same way.
"""

from __future__ import annotations

from pathlib import Path

from orders import application

from bastion import Bastion

app = Bastion(application, config=Path(__file__).with_name("bastion.yaml"))

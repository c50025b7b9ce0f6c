"""The FastAPI orders API (orders.py) behind every bastion guard: ``uvicorn main:app``."""

from __future__ import annotations

from pathlib import Path

from orders import api

from bastion import Bastion

app = Bastion(api, config=Path(__file__).with_name("bastion.yaml"))

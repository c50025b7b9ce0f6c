"""Write FastAPI's own OpenAPI description to openapi.json, for bastion.yaml to point at.

Run it whenever the routes or models change (a test checks the file is current).
"""

from __future__ import annotations

import json
from pathlib import Path

from orders import api

if __name__ == "__main__":
    path = Path(__file__).with_name("openapi.json")
    path.write_text(json.dumps(api.openapi(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")

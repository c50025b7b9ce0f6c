"""Rate limiting: sans-I/O algorithms, rules compiled once, memory and Redis stores, the ASGI guard."""

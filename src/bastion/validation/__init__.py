"""Request validation from the OpenAPI description: loading, routing, compiled checks, the guard."""

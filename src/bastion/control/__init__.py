"""The control plane: reloads, suggestions."""

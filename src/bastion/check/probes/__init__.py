"""The probes of ``bastion probe``: one module per pitfall, plus the client and the analysis."""

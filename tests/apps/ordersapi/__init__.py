"""A small application for ``bastion errors docs --app``: codes in a subclass and in ``code=`` calls."""

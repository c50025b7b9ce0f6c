"""Changing a running bastion's configuration: generations of the guard chain, reloads, watching files.

- :mod:`bastion.control.generation`: one configuration's chain, its resources and the
  requests running on it; a retired generation closes its resources once they finish.
- :mod:`bastion.control.reload`: what a reload logs and counts.
- :mod:`bastion.control.watch`: the reloader of a serving process (SIGHUP, ``--watch``),
  which runs one reload at a time.

With ``--workers N`` the gateway's supervisor forwards SIGHUP to every worker
(:func:`bastion.gateway.serving.serve`).
"""

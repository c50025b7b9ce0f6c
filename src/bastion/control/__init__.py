"""The control plane: changing a running bastion, and suggesting what to change.

- :mod:`bastion.control.generation`: one configuration's chain, its resources and the
  requests running on it; a retired generation closes its resources once they finish.
- :mod:`bastion.control.reload`: what a reload logs and counts.
- :mod:`bastion.control.watch`: the reloader of a serving process (SIGHUP, ``--watch``),
  which runs one reload at a time.
- :mod:`bastion.control.suggest`: ``bastion limits suggest``, rate limits from the
  client rates the rate limit guard observed (:mod:`bastion.ratelimit.observed`).

With ``--workers N`` the gateway's supervisor forwards SIGHUP to every worker
(:func:`bastion.gateway.serving.serve`).
"""

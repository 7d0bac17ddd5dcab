"""What every SIP connection of the daemon is served with, and nothing more.

The listeners' protocols read the registry (logins, accounts), the server settings (timeouts,
frame size, connection caps), the ACS, the events (log lines and metrics) and the password-check
queue here, rather than reaching through the whole server. A reload swaps ``registry`` and
``settings`` whole; a connection reads them at each use, so it picks up a reload at its next
message.
"""

from __future__ import annotations

import attrs

from sipserver.accounts.password_checks import PasswordChecks
from sipserver.accounts.registry import Registry
from sipserver.acs import ACS
from sipserver.config import ServerConfig
from sipserver.observe.events import Events


@attrs.define(eq=False)
class Serving:
    """See the module docstring. ``password_checks`` None: scrypt checks run on the caller."""

    registry: Registry
    settings: ServerConfig
    acs: ACS
    events: Events
    password_checks: PasswordChecks | None = None
    #: Open SIP connections on every listener, held to ``settings.max_connections``.
    connections: int = 0

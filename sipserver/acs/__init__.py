"""The ACS: SIP2 requests answered from an ILS backend, one handler per request code.

``core`` dispatches a request to its handler by what :func:`~sipserver.acs.core.handles` declared
for its code; ``handlers`` holds the handlers, imported here so that every code is declared
before the first request arrives.
"""

from . import handlers
from .context import Reply, RequestContext
from .core import ACS, handles, offered, permitted
from .health import BackendHealth

__all__ = ["ACS", "BackendHealth", "Reply", "RequestContext", "handlers", "handles", "offered", "permitted"]

"""The ACS core: SIP2 requests answered from an ILS backend, one handler per message."""

from .context import PERMISSION_FOR, Reply, RequestContext, permitted
from .core import ACS, BackendHealth

__all__ = ["ACS", "PERMISSION_FOR", "BackendHealth", "Reply", "RequestContext", "permitted"]

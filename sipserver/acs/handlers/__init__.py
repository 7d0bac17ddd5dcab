"""One handler per SIP2 request the ACS answers: decoded request -> backend request -> reply.

Each handler is declared with :func:`sipserver.acs.core.handles`, which says in one line what
the ACS needs to know about its request code: the permissions an account needs, the policy switch
that turns it off, and its negative reply (used for permission and policy refusals, outages and
unexpected faults, so that a terminal always gets the message it waits for). Importing this
package declares them all; ``sipserver.acs`` does.

Handlers read fields by id (any order, missing means empty), ask the institution's backend with
one typed request through :meth:`sipserver.acs.core.ACS.call`, and build the reply with
:func:`sipserver.sip2.make` by field name from what the backend answered.
"""

from . import circulation, fees, holds, items, patrons, status

__all__ = ["circulation", "fees", "holds", "items", "patrons", "status"]

"""The ``twistd sip`` plugin: points twistd at :mod:`sipserver.tap` without importing it."""

from twisted.application.service import ServiceMaker

sipserver = ServiceMaker(
    "sipserver", "sipserver.tap", "SIP2 server for library self-check and circulation", "sip"
)

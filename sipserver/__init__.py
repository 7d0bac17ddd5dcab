"""sipserver: a SIP2 server for libraries on Twisted."""

__version__ = "0.1.0"

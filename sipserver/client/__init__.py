"""The SIP2 client: a blocking client (tests, benchmarks, the CLI), one ``sipclient`` connection, the CLI."""

from .blocking import SIPClient, SIPClientError

__all__ = ["SIPClient", "SIPClientError"]

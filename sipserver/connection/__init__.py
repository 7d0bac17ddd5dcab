"""One terminal's SIP2 connection, independent of the transport."""

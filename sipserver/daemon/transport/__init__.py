"""Twisted transports: the SIP protocol, telnet's login prelude, the PROXY header, backpressure, reply batching."""

"""Twisted transports: the protocol that drives a SIP connection, telnet's login prelude,
backpressure and reply batching."""

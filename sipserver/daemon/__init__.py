"""The running daemon on Twisted: the service, its listeners and transports, workers and systemd."""

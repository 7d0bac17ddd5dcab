"""What the daemon tells its operators: events and metrics, the exchange log, the HTTP status page."""

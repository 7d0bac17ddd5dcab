"""ILS backends: the interface the ACS calls, and its implementations."""

"""The operator's console: what every terminal is doing, who was refused and how to fix it.

:mod:`.record` keeps the books from the same events the exchange log and the metrics get (kept
cheap: a few attribute stores per request, no formatting); :mod:`.activity` turns the metrics'
counters into per-minute figures for the last 24 hours; :mod:`.snapshot` makes a JSON-able
snapshot of one process and merges those of several workers; :mod:`.view` adds what the config
says (allow-lists, expiry) for the page; :mod:`.pages` serves the page on the HTTP status listener.
"""

"""The ``sip2`` backend: this daemon in front of another SIP2 server (any ILS's own), relaying each
typed request over a few pooled, logged-in upstream connections and answering with what it said."""

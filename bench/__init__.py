"""Load benchmark of the service against the framework's limit and a tutorial implementation.

`make bench` (== `python -m bench`) runs everything; see bench/README.md.
"""

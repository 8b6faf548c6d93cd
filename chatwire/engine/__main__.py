"""`python -m chatwire.engine` runs the compliance-suite reference server."""

from chatwire.engine.reference import main

main()

from chatwire.cli import main

main()

from pcs.cli import main

main()

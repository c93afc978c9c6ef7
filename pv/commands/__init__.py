"""One module per `pv` sub-command: argument parsing and printing only."""

"""`python -m survey ...` = `pv survey ...` without loading the rest of pv's CLI."""
import sys

from survey.cli import main

sys.exit(main())

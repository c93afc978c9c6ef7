"""`python -m pv.survey ...` = `pv survey ...` without loading the rest of pv's CLI."""
import sys

from pv.survey.cli import main

sys.exit(main())

"""`python -m pv.survey ...` = `pv survey ...` without loading the rest of pv's CLI."""
import sys

from pv.errors import PVError
from pv.survey.cli import main

try:
    sys.exit(main())
except PVError as err:
    print(f"pv survey: error: {' '.join(str(err).split())}", file=sys.stderr)
    sys.exit(2)

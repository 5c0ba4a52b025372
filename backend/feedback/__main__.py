"""`python -m backend.feedback`: the operator's list of recent feedback (see `backend.feedback.cli`)."""

import sys

from backend.feedback import cli

if __name__ == "__main__":
    cli.main(sys.argv[1:])

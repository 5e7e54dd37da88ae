"""``python -m minisnn ...``: the ``minisnn`` command (train, eval, bench, export, doctor)."""
import sys

from .cli import main

sys.exit(main())

"""``python -m dynashape``: the same as the ``dynashape`` console script."""
import sys

from .cli import main

sys.exit(main())

"""``python -m dynashape``: the same as the ``dynashape`` console script."""
import sys

from .cli.main import main

sys.exit(main())

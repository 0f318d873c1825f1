"""``python -m dynashape.bench``: the generation benchmark."""
from .generate import main

raise SystemExit(main())

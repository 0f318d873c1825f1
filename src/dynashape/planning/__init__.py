"""Planning: ranges and shape plans (``shapes``), the rules that make a plan (``rules``), and the
translation of torch's shape errors (``diagnose``)."""

"""``python -m sglang_roll_compat``: the doctor, and the other commands (see ``--help``)."""

from .cli import main

raise SystemExit(main())

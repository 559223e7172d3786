"""``python -m samraug``: the same as the ``samraug`` command."""

from samraug.cli import main

raise SystemExit(main())

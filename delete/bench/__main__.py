"""``python -m delete.bench``."""

from __future__ import annotations

from delete.bench.cli import main

raise SystemExit(main())

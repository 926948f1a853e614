"""What the library shows on the console: warnings as one line (library code and worker
processes import it here, not from the CLI)."""
from __future__ import annotations

import sys


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line without the source path (``warnings.showwarning`` signature)."""
    print(f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)

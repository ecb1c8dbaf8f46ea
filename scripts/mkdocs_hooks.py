"""mkdocs hooks of plait's documentation site.

The code's docstrings name other objects the Sphinx way (``:class:`~plait.x.Y```),
which mkdocstrings passes through as text: ``:class:`` and a code span. This turns
each such role into the code span alone — the last component of the name when it
starts with ``~``, as Sphinx shows it.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|mod|func|meth|attr|data|exc|obj):<code>(~?)([\w.]+)</code>")


def _short(match: re.Match[str]) -> str:
    name = match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(1) else name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Replace the Sphinx roles left in rendered docstrings."""
    return _ROLE.sub(_short, html)

"""Where the documentation is published, for messages that send a reader there.

A message that says "see docs/credentials.md" points to a path that only a checkout has; people who
installed the package get the published page instead. ``DOCS_URL`` is the same address as ``site_url`` in
mkdocs.yml, and tests/test_docs_site.py checks that every link a message builds names a page (and a heading)
that ``mkdocs build`` makes.

Example::

    from flytekitplugins_awssecrets.links import doc_link
    doc_link("credentials")                # https://.../credentials/
    doc_link("cluster", "running-at-scale")  # https://.../cluster/#running-at-scale
"""

from __future__ import annotations

__all__ = ["DOCS_URL", "doc_link"]

#: The published documentation (GitHub Pages, deployed by .github/workflows/docs.yml).
DOCS_URL = "https://flytekitplugins-awssecrets.github.io/flytekitplugins-awssecrets/"


def doc_link(page: str, anchor: str = "") -> str:
    """The published address of ``docs/<page>.md`` (and of one of its headings)."""
    return f"{DOCS_URL}{page}/" + (f"#{anchor}" if anchor else "")

"""Sphinx configuration of the reference site: ``make docs`` builds it into ``site/``.

The docstrings are Google-style sections (``Args:``, ``Returns:``, ``Raises:``; the
scikit-activeml adapter follows that framework's NumPy style) around reStructuredText markup
(roles such as ``:func:``, tables, literal blocks): napoleon's input. The guides in this folder
are Markdown, read by MyST.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform

import alkernels

project = "alkernels"
release = alkernels.__version__
version = release
copyright = "the alkernels authors"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}

# GitHub-style anchors on Markdown headings, so links such as model.md#crystal-graphs resolve.
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_class_signature = "separated"
# "Attributes:" sections as fields of their class, not a second description of each dataclass field
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"alkernels {release}"
html_show_sourcelink = False
html_copy_source = False

DOCS = Path(__file__).resolve().parent


class RepositoryLinks(SphinxPostTransform):
    """A guide's link to a repository file outside ``docs/`` (a study's README, the benchmark
    report) stays a relative link to that file, valid in the checkout where ``site/`` sits beside
    ``docs/``. MyST would report it as a missing document; a link to a file that does not exist
    still fails the build."""

    default_priority = 8  # before MyST's reference resolver (9)

    def run(self, **kwargs: Any) -> None:
        for node in list(self.document.findall(addnodes.pending_xref)):
            if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
                continue
            target = Path(node["reftarget"] + ".md")
            if not target.is_absolute() or DOCS in target.parents or not target.is_file():
                continue
            uri = os.path.relpath(target, (DOCS / self.env.docname).parent)
            if node.get("reftargetid"):
                uri += "#" + node["reftargetid"]
            node.replace_self(nodes.reference("", "", *node.children, refuri=uri))


def setup(app: Sphinx) -> None:
    app.add_post_transform(RepositoryLinks)

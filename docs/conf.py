"""Sphinx configuration of ctseg's docs: ``make docs`` (``sphinx-build -W --keep-going -n docs docs/_build/html``).

The project's name, version and summary come from the installed package's metadata. Nothing is fetched from the
network (no intersphinx): references into other projects are left as plain text by ``nitpick_ignore_regex`` below,
one entry per third-party or standard-library namespace; every reference to ctseg itself must resolve.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import metadata

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_here, "_ext"))  # ctseg_docs
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm never waits on the network while the CLI help is rendered

_meta = metadata("ctseg")
project = _meta["Name"]
release = _meta["Version"]
version = ".".join(release.split(".")[:2])
with open(os.path.join(_here, "..", "LICENSE"), encoding="utf-8") as _license:  # "Copyright (c) YEAR HOLDERS"
    copyright = next(line for line in _license if line.startswith("Copyright")).split(")", 1)[1].strip()
html_title = f"{project} {release}"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "ctseg_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
html_theme = "alabaster"
html_theme_options = {"description": _meta["Summary"], "fixed_sidebar": True}
html_static_path: list[str] = []

# Markdown (MyST): the user pages and design.md. Headings get anchors down to level 4, so a link such as
# `[resume](design.md#9-exact-resume)` resolves (and is checked); no MyST extensions, so `$…$` stays literal text.
myst_heading_anchors = 4

# API reference (.. ctseg-package:: in api/*.rst): every module with its members, in source order.
# A module's `__all__` (what `import *` takes) does not limit the page: its other public names are documented too.
# Docstrings are not inherited: torch's and Lightning's would bring their own cross-references.
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
    "ignore-module-all": True,
}
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
napoleon_use_ivar = True  # a class's Attributes: section as fields (its members are documented anyway)

nitpicky = True
# Third-party and standard-library names (no intersphinx: nothing is downloaded). ctseg's own are never listed.
_FOREIGN = """
    torch torchvision torchmetrics lightning pytorch_lightning lightning_fabric timm numpy np PIL rasterio affine
    shapely pyogrio pyproj pystac onnx onnxruntime onnxscript safetensors jsonargparse matplotlib yaml tqdm tensorboard
    abc argparse collections concurrent contextlib csv dataclasses datetime enum fcntl functools io json logging
    multiprocessing numbers os pathlib pickle random re subprocess tempfile threading types typing typing_extensions
    warnings xml zipfile
""".split()  # third-party packages, then the standard library
nitpick_ignore_regex = [(r"py:.*", rf"{name}(\..*)?") for name in _FOREIGN]
# builtins, as written in signatures and docstrings
nitpick_ignore_regex += [
    (r"py:.*", r"(int|float|str|bytes|bool|dict|list|tuple|set|frozenset|object|type|None|Ellipsis|slice|range)"),
    (r"py:.*", r"(Exception|ValueError|TypeError|KeyError|OSError|RuntimeError|AttributeError|ImportError)"),
    (r"py:.*", r"(FileNotFoundError|FileExistsError|PermissionError|KeyboardInterrupt|SystemExit|Warning)"),
    (r"py:.*", r"(UserWarning|DeprecationWarning|NotImplementedError|StopIteration|BaseException|memoryview)"),
]

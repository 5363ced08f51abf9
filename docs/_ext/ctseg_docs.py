"""Sphinx helpers for ctseg's docs, all computed at build time from the installed package (nothing generated is
committed, so nothing can go stale):

* ``.. ctseg-package:: ctseg.inference`` — a package's API page: its docstring, its public names (each linked to
  where it is defined) and every module below it (``automodule`` with members), found by walking the package;
* ``.. ctseg-cli::`` — ``ctseg --help`` and each sub-command's ``--help``, from ``ctseg.cli.entry``'s parser and
  its ``COMMANDS`` registry;
* ``.. ctseg-lightning-help:: fit`` — what ``ctseg fit --help`` prints (``ctseg.cli.entry.main``), collapsed;
* a ``missing-reference`` handler that resolves a ctseg name the way Python would — a public path
  (``ctseg.inference.predict_tile``), a name a module imported (``CtsegError`` inside ``ctseg.predict.run``) or a
  forwarding module's name (``ctseg.metrics.BoundaryMetrics``) — to the object's documented definition.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import os
import pkgutil
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: modules never documented: running them has effects (``python -m ctseg.cli``).
SKIP_MODULES = ("ctseg.cli.__main__",)
#: width of the rendered ``--help`` texts (argparse reads ``COLUMNS``), so the pages do not depend on a terminal.
HELP_COLUMNS = "100"


def submodules(package: str) -> list[str]:
    """Every module below ``package``, in name order, each package followed by the modules below it."""
    module = importlib.import_module(package)
    found: list[str] = []
    for info in sorted(pkgutil.iter_modules(module.__path__, package + "."), key=lambda i: i.name):
        if info.name in SKIP_MODULES:
            continue
        found.append(info.name)
        if info.ispkg:
            found.extend(submodules(info.name))
    return found


def public_names(package: str) -> list[str]:
    """A package's public names: its ``__all__``, else what its lazy ``__dir__`` lists that is not a module."""
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    if names is None:
        subs = {info.name for info in pkgutil.iter_modules(module.__path__)}
        names = [n for n in dir(module) if not n.startswith("_") and n not in subs]
    return sorted(names)


class PackageDirective(SphinxDirective):
    """The API page of one package (or, with ``:modules:``, of the listed top-level modules)."""

    optional_arguments = 1
    option_spec = {"modules": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        if self.arguments:
            package = self.arguments[0]
            lines += [f".. automodule:: {package}", ""]
            names = public_names(package)
            if names:
                lines += [".. rubric:: Public names", "", f"Importable from ``{package}``:", ""]
                lines += [f"* :py:obj:`{package}.{name}`" for name in names]
                lines.append("")
            modules = submodules(package) if hasattr(importlib.import_module(package), "__path__") else []
        else:
            modules = self.options.get("modules", "").split()
        for name in modules:
            lines += [name, "-" * len(name), "", f".. automodule:: {name}", ""]
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=self.get_source_info()[0]), node)
        return node.children


def _help_block(text: str) -> nodes.literal_block:
    block = nodes.literal_block(text, text)
    block["language"] = "text"
    return block


def _captured(call: Any) -> str:
    """What ``call()`` prints on stdout, with ``SystemExit`` (argparse's exit after ``--help``) caught."""
    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                call()
            except SystemExit:
                pass
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue().rstrip() + "\n"


class CliDirective(SphinxDirective):
    """``ctseg --help`` then one section per sub-command of ``COMMANDS`` with its ``--help``."""

    def run(self) -> list[nodes.Node]:
        from ctseg.cli import entry

        parser = entry._parser()
        subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        result: list[nodes.Node] = [_help_block(_captured(parser.print_help))]
        for name in entry.COMMANDS:
            section = nodes.section(ids=[f"ctseg-{name}"], names=[f"ctseg {name}"])
            section += nodes.title(text=f"ctseg {name}")
            section += nodes.paragraph(text=subparsers.choices[name].description or entry.COMMANDS[name].HELP)
            section += _help_block(_captured(subparsers.choices[name].print_help))
            self.state.document.note_implicit_target(section)
            result.append(section)
        return result


class LightningHelpDirective(SphinxDirective):
    """``ctseg <fit|validate|test> --help`` (LightningCLI's help, long) in a collapsed block."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from ctseg.cli import entry

        command = self.arguments[0]
        if command not in entry.LIGHTNING_COMMANDS:
            raise self.error(f"not a LightningCLI command: {command}")
        text = _captured(lambda: entry.main([command, "--help"]))
        summary = f"<details><summary><code>ctseg {command} --help</code> ({text.count(chr(10))} lines)</summary>"
        return [
            nodes.raw("", summary, format="html"),
            _help_block(text),
            nodes.raw("", "</details>", format="html"),
        ]


_INSTANCE_ATTRIBUTE = object()


def _import_path(dotted: str) -> tuple[type | None, Any]:
    """``(owner, obj)``: the object ``dotted`` names, found as Python finds it (the longest importable module, then
    attributes); ``owner`` is the class when the last step is a class attribute, else None."""
    parts = dotted.split(".")
    if "__main__" in parts:  # importing it runs the command
        raise ImportError(dotted)
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        owner = None
        rest = parts[cut:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # forwarding modules warn
            for i, attr in enumerate(rest):
                if i == len(rest) - 1 and inspect.isclass(obj) and not hasattr(obj, attr):
                    return obj, _INSTANCE_ATTRIBUTE  # a field without a default, an attribute set in __init__
                owner, obj = obj, getattr(obj, attr)
        return (owner if inspect.isclass(owner) else None), obj
    raise ImportError(dotted)


def _full_name(obj: Any) -> str | None:
    if inspect.ismodule(obj):
        return obj.__name__
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return None


def _imported_as(module: str, name: str) -> str | None:
    """The full path an ``import`` in ``module``'s source binds ``name`` to, ``if TYPE_CHECKING:`` blocks included
    (signatures name such types as strings)."""
    source = getattr(sys.modules.get(module), "__file__", None)
    if not source or not source.endswith(".py"):
        return None
    head, _, rest = name.partition(".")
    try:
        with open(source, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):  # a module changed on disk since it was imported
        return None
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
            for alias in stmt.names:
                if (alias.asname or alias.name) == head:
                    return ".".join(p for p in (stmt.module, alias.name, rest) if p)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname == head:
                    return ".".join(p for p in (alias.name, rest) if p)
                if alias.asname is None and alias.name.split(".")[0] == head:
                    return name
    return None


def _definitions(dotted: str, documented: Mapping[str, Any]) -> list[str]:
    """Where Python defines what ``dotted`` (a name inside ctseg) names, best first: a class attribute's defining
    class in the MRO, a class's or function's ``__module__.__qualname__``, a module's name, or the documented
    module-level names bound to this very object (data); for a name only imported for type checking, its
    import path."""
    try:
        owner, obj = _import_path(dotted)
    except Exception:  # not there (ImportError, AttributeError), or a module that fails to import: not found
        module, _, name = dotted.rpartition(".")
        while module and module not in sys.modules:
            module, _, head = module.rpartition(".")
            name = f"{head}.{name}"
        where = _imported_as(module, name) if module else None
        return [where] if where else []
    found: list[str] = []
    if owner is not None:
        attr = dotted.rsplit(".", 1)[1]
        defines = [c for c in owner.__mro__ if attr in vars(c) or attr in vars(c).get("__annotations__", {})]
        cls = defines[0] if defines else owner
        found.append(f"{cls.__module__}.{cls.__qualname__}.{attr}")
    if obj is _INSTANCE_ATTRIBUTE:
        return found
    if (full := _full_name(obj)) is not None:
        found.append(full)
    elif owner is None:
        last = dotted.rsplit(".", 1)[1]
        for candidate in documented:
            where, _, attr = candidate.rpartition(".")
            if attr == last and where in sys.modules and getattr(sys.modules[where], attr, None) is obj:
                found.append(candidate)
    return found


def _ignored(app, reftype: str, full: str) -> bool:
    """Whether ``conf.py``'s ``nitpick_ignore_regex`` leaves ``full`` (a foreign name) as text."""
    return any(
        re.fullmatch(typ, f"py:{reftype}") and re.fullmatch(target, full)
        for typ, target in app.config.nitpick_ignore_regex
    )


def resolve_by_import(app, env, node, contnode):
    """``missing-reference``: a name that Python resolves from where it is written → its documented definition.

    The name is looked up as written, then inside the current class and module (as Python would see it there).
    Where Python defines it decides: a documented ctseg object → a link; a private ctseg object (a ``_`` part, left
    out of the API pages) → code text; a foreign object that ``nitpick_ignore_regex`` covers → code text. Anything
    else stays a warning, so a reference to a name that does not exist fails the build."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates.insert(0, f"{module}.{target}")
        if cls:
            candidates.insert(0, f"{module}.{cls}.{target}")
    for dotted in candidates:
        if not dotted.startswith("ctseg."):
            continue
        for where in _definitions(dotted, domain.objects):
            if where in domain.objects:
                for role in (node["reftype"], "obj"):
                    found = domain.resolve_xref(env, node["refdoc"], app.builder, role, where, node, contnode)
                    if found is not None:
                        return found
            elif where.startswith("ctseg.") and any(p.startswith("_") for p in where.split(".")):
                return contnode
            elif not where.startswith("ctseg.") and _ignored(app, node["reftype"], where):
                return contnode
    return None


def keep_attribute_prose(app, what, name, obj, options, lines):
    """Undo napoleon's inline attribute type: ctseg's attribute docstrings are prose (``#: Metadata tag: …``), their
    types come from annotations. Runs after napoleon (priority 600); napoleon appends the part before the first
    colon as ``:type:``, which goes back in front of the text."""
    if what not in ("attribute", "data", "property") or len(lines) < 2 or not lines[-1].startswith(":type: "):
        return
    prefix = lines[-1].removeprefix(":type: ")
    del lines[-2:]
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        lines.append(prefix)
    else:
        lines[first] = f"{prefix}: {lines[first]}"


_SHARED_FIELD = re.compile(r"^(\s*):(ivar|vartype) ([\w*]+(?:, [\w*]+)+):(.*)$")


def split_shared_fields(app, what, name, obj, options, lines):
    """``Attributes:`` entries that share a description (``mean, std: …``) become one field per name, as napoleon
    does for ``Args:``; left as they are, Sphinx would read ``mean,`` as the type of ``std``. Runs after napoleon."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _SHARED_FIELD.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent, kind, names, first = match.groups()
        body = [first]
        i += 1
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(indent):
            body.append(lines[i])
            i += 1
        for one in names.split(", "):
            out.append(f"{indent}:{kind} {one}:{body[0]}")
            out.extend(body[1:])
    lines[:] = out


def readable_defaults(app, what, name, obj, options, signature, return_annotation):
    """A dataclass field's ``default_factory`` shows as ``<factory>``, which no Python parser (Sphinx's signature
    parser included) reads; show it as ``...``."""
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


def setup(app):
    app.add_directive("ctseg-package", PackageDirective)
    app.add_directive("ctseg-cli", CliDirective)
    app.add_directive("ctseg-lightning-help", LightningHelpDirective)
    app.connect("missing-reference", resolve_by_import)
    app.connect("autodoc-process-docstring", keep_attribute_prose, priority=600)
    app.connect("autodoc-process-docstring", split_shared_fields, priority=600)
    app.connect("autodoc-process-signature", readable_defaults)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

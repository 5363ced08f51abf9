"""``ctseg fit | validate | test --help`` as a user reads it: ctseg's options first, plain text, a short usage.

The option descriptions come from docstrings written for Sphinx (ctseg's and Lightning's); :func:`plain_text`
turns their markup into what a terminal shows: ``:func:`~ctseg.data.prepare.prepare_dataset``` → ``prepare_dataset``,
``:class:`a.B``` → ``a.B``, ``:mod:`text <target>``` → ``text``, double back-quotes → none.
"""

from __future__ import annotations

import re

from jsonargparse import DefaultHelpFormatter

__all__ = ["DESCRIPTIONS", "PlainHelpFormatter", "plain_text", "usage"]

#: What each subcommand does, above its options.
DESCRIPTIONS = {
    "fit": "Train a model: a config (--config FILE, or a packaged config's NAME: ctseg configs) and any option "
    "below to override it. Checkpoints, CSV and TensorBoard logs go to --trainer.default_root_dir.",
    "validate": "Score a checkpoint (--ckpt_path) on the data module's validation split.",
    "test": "Score a checkpoint (--ckpt_path) on the data module's evaluation split (it prints which: the split "
    "fit validated on, as in the paper's protocol).",
}

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`<]*?)(?:\s*<[^`>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)


def _role(match: re.Match) -> str:
    tilde, text = match.groups()
    return text.rsplit(".", 1)[-1] if tilde else text


def plain_text(text: str) -> str:
    """``text`` without reST roles and literal markup (see the module docstring)."""
    return _LITERAL.sub(r"\1", _ROLE.sub(_role, text))


class PlainHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter (types, defaults, known subclasses) with option and group texts in plain text."""

    def _expand_help(self, action) -> str:
        return plain_text(super()._expand_help(action))

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))


def usage(subcommand: str) -> str:
    """The usage line of ``ctseg SUBCOMMAND``: the option families, not all ~150 options."""
    return (
        f"ctseg {subcommand} [-c CONFIG|NAME] [--print_config] [--model.OPTION V ...] [--data CLASS] "
        "[--data.OPTION V ...] [--trainer.OPTION V ...] [--checkpoint.OPTION V ...] [--ckpt_path PATH|last]\n"
        f"  (all options below; CONFIG may be a packaged config's name: ctseg configs)"
    )

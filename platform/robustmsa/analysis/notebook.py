"""What only a notebook needs: `short_errors`, so that a failed cell shows a
`RobustMSAError` as its one-line message rather than a traceback through this package."""

from __future__ import annotations

from robustmsa.errors import RobustMSAError


def short_errors() -> None:
    """In IPython (a notebook's kernel), show a `RobustMSAError` as its one-line message
    (``RobustMSAError: experiment 'X' has no study runs in ...``) instead of a traceback; the
    cell still fails, so a notebook run stops there with a non-zero exit. Elsewhere, nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def one_line(shell, etype, value, tb, tb_offset=None):
        shell.showtraceback((etype, value, tb), exception_only=True)

    shell.set_custom_exc((RobustMSAError,), one_line)

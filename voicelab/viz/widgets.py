"""Interactive controls for the tutorial notebooks.

:func:`interact` is a thin layer over :func:`ipywidgets.interactive`: the controls
re-run a function when the user lets go of a slider (not on every pixel of a drag), and
a :class:`~voicelab.VoicelabError` (an impossible combination of settings) prints one
line instead of a traceback.

Headless runs (CI executes every chapter with ``VOICELAB_NO_WIDGETS=1``) call the
function once with its default arguments and create no widget at all: widget comm
messages can stall a headless notebook client (jupyter/nbclient#312), and nobody is
there to move a slider anyway.

In a live JupyterLab the controls appear exactly once: the box is displayed by
:func:`interact` and also returned (so code can read ``box.kwargs`` or ``box.result``);
when the call ends a cell, IPython does not draw the returned box a second time.
``tests/test_lab_browser.py`` checks this in a real JupyterLab driven by Chromium.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from ..errors import ParameterError, VoicelabError

__all__ = ["interact", "headless"]


def headless() -> bool:
    """True when notebooks run without a person at the controls (``VOICELAB_NO_WIDGETS=1``)."""
    return os.environ.get("VOICELAB_NO_WIDGETS", "") == "1"


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(**kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except VoicelabError as exc:
            print(f"error: {exc}")
            return None

    run.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    run.__name__ = getattr(fn, "__name__", "run")
    return run


def interact(fn: Callable[..., Any], **controls: Any) -> Any:
    """Show controls that re-run ``fn``; the initial values are ``fn``'s defaults.

    Parameters
    ----------
    fn : callable
        Called with one keyword argument per control. Every control's parameter must
        have a default value: it is the initial setting and what headless runs use.
    **controls
        ipywidgets abbreviations or widgets: ``(lo, hi, step)`` for a slider, a list for
        a dropdown, a bool for a checkbox.

    Returns
    -------
    ipywidgets.interactive or the function's result
        The widget box when interactive; in headless runs, what ``fn()`` returned.

    Examples
    --------
    >>> def show(loss=0.05, codec="pcmu"):
    ...     return f"{codec} at {loss:.0%}"
    >>> import os; os.environ["VOICELAB_NO_WIDGETS"] = "1"
    >>> interact(show, loss=(0.0, 0.3, 0.01), codec=["pcmu", "opus"])
    'pcmu at 5%'
    """
    sig = inspect.signature(fn)
    for name in controls:
        param = sig.parameters.get(name)
        if param is None:
            raise ParameterError(f"interact: {getattr(fn, '__name__', fn)} has no parameter {name!r}")
        if param.default is inspect.Parameter.empty:
            raise ParameterError(f"interact: parameter {name!r} needs a default value (the initial setting)")
    guarded = _guarded(fn)
    if headless():
        return guarded()
    from IPython.display import display

    box = _interactive_class()(guarded, **controls)
    for child in box.children:
        if hasattr(child, "continuous_update"):
            child.continuous_update = False
    display(box)
    box._voicelab_shown = True  # (already set when a kernel displayed it via _ipython_display_)
    return box


_INTERACTIVE: type | None = None


def _interactive_class() -> type:
    """:class:`ipywidgets.interactive` that IPython displays at most once.

    ``interact(...)`` both displays the box and returns it; as the last line of a cell
    the returned box would be drawn again as the cell's result (two copies of every
    control and of the output). IPython calls ``_ipython_display_`` instead of the
    widget's mime bundle, so the second display is a no-op.
    """
    global _INTERACTIVE
    if _INTERACTIVE is None:
        import ipywidgets

        class Interactive(ipywidgets.interactive):
            _voicelab_shown = False

            def _ipython_display_(self, **kwargs: Any) -> None:
                if self._voicelab_shown:
                    return
                self._voicelab_shown = True
                from IPython.display import display

                display(self._repr_mimebundle_(**kwargs), raw=True)

        _INTERACTIVE = Interactive
    return _INTERACTIVE

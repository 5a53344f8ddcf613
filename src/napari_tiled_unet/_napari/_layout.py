"""Widget layout shared by the Predict and Train widgets: settings that scroll, actions that stay.

A docked widget must fit a laptop screen beside another one: its settings scroll, while the
buttons that start and stop a job and the status line below them stay visible.
"""

from __future__ import annotations

from collections.abc import Sequence

from magicgui.widgets import Container, Widget
from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

SETTINGS_MIN_HEIGHT = 110
"""Pixels of settings that stay visible however small the dock gets (about four rows)."""


class _SettingsScroll(QScrollArea):
    """A vertical scroll area that asks for the whole height of its contents (it gets it when
    the dock has room) but can shrink to :data:`SETTINGS_MIN_HEIGHT`, never below its
    contents' width."""

    def sizeHint(self) -> QSize:
        return self.widget().sizeHint() + QSize(self._bar(), 0)

    def minimumSizeHint(self) -> QSize:
        width = self.widget().minimumSizeHint().width() + self._bar()
        return QSize(width, min(SETTINGS_MIN_HEIGHT, self.widget().sizeHint().height()))

    def _bar(self) -> int:
        return self.verticalScrollBar().sizeHint().width()


def scroll_rows(parent: Container, widgets: Sequence[Widget]) -> None:
    """Show the rows of ``widgets`` (consecutive children of ``parent``) in a scroll area.

    magicgui keeps them as ``parent``'s children (choices, visibility, values and iteration
    order work as before); only their Qt rows move into a frameless scroll area, in the place
    of the first, that can shrink to :data:`SETTINGS_MIN_HEIGHT`: the dock's minimum height no
    longer grows with the number of fields. (magicgui's own ``scrollable=True`` scrolls a
    whole container, buttons included, and cannot be nested.)
    """
    layout = parent.native.layout()
    rows = [_row(parent, widget) for widget in widgets]
    index = layout.indexOf(rows[0])
    inner = QWidget()
    inner_layout = QVBoxLayout(inner)
    inner_layout.setContentsMargins(0, 0, 0, 0)
    inner_layout.setSpacing(layout.spacing())
    for row in rows:
        layout.removeWidget(row)
        inner_layout.addWidget(row)
    inner_layout.addStretch()
    scroll = _SettingsScroll()
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(inner)
    layout.insertWidget(index, scroll, 1)


def _row(parent: Container, widget: Widget) -> QWidget:
    """The Qt widget that is ``widget``'s row in ``parent``'s layout (it may hold a label)."""
    row = widget.native
    while row.parentWidget() is not parent.native:
        row = row.parentWidget()
    return row


def expose(parent: Container, *containers: Container) -> None:
    """Make the widgets of ``containers`` attributes of ``parent`` (``parent.depth``)."""
    for container in containers:
        for widget in container:
            setattr(parent, widget.name, widget)

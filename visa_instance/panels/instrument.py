"""The PyDM display of one instrument: motors, temperature, shutter, detector, runs, a live plot.

Loaded by PyDM from its path (``pydm ... instrument.py``) with the macros ``INSTRUMENT`` (the
PV prefix without its colon, e.g. ``D11``) and ``MOTORS`` (comma-separated axes, e.g.
``DET:Z,SAMPLE:X``); channels are ``pva://<INSTRUMENT>:...`` as docs/instrument.md lists them.

Two things PyDM does not do for PVAccess, done here:

* **A refused write is shown.** PyDM's p4p plugin always reports write access (p4p cannot tell
  it) and only *logs* a put the gateway refuses; the panel turns those log records into a red
  "Write refused" line, so nobody believes a motor moved when it did not.
* **Connection progress is reported** on stderr (``connected 27/27 channels``) and in the
  panel's status line, which is what the launcher's log and the tests read.
"""

from __future__ import annotations

import logging
from functools import partial

from pydm import Display
from pydm.data_plugins import is_read_only
from pydm.widgets import PyDMByteIndicator, PyDMEnumComboBox, PyDMLabel, PyDMLineEdit, PyDMPushButton, PyDMTimePlot
from pydm.widgets.channel import PyDMChannel
from pydm.widgets.display_format import DisplayFormat
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QApplication, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

log = logging.getLogger("visa_instance.instrument_panel")

# Where PyDM's PVAccess plugin logs a put that failed (and a put refused in read-only mode).
PUT_LOGGERS = ("pydm.data_plugins.epics_plugins.p4p_plugin_component",)
READ_ONLY_NOTE = "read-only: you cannot write to the instrument"
# Positions to the micrometre/millidegree whatever precision the PV announces (a PVA server
# that sets none announces 0, which would round 7.5 mm to 8).
MOTOR_PRECISION = {"precisionFromPV": False, "precision": 3}


class PutErrors(QObject, logging.Handler):
    """Log records of failed puts, re-emitted as a Qt signal for the panel's error line."""

    refused = Signal(str)

    def __init__(self) -> None:
        QObject.__init__(self)
        logging.Handler.__init__(self, logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:  # type: ignore[override]
        message = record.getMessage()
        if "put" in message.lower() or "write" in message.lower():
            self.refused.emit(message)


class SetpointEdit(PyDMLineEdit):
    """PyDM's line edit, showing the PV's value again when the person leaves the field.

    PyDMLineEdit skips updates while it has the focus and, on leaving it, restores the text it
    last displayed: a setpoint just written (or refused) would show the old value.
    """

    def focusOutEvent(self, event: object) -> None:  # noqa: N802 (Qt's name)
        super().focusOutEvent(event)
        self.set_display()


def _field(parent: QWidget, kind: type, channel: str, **props: object) -> QWidget:
    widget = kind(parent, init_channel=channel)
    for name, value in props.items():
        setattr(widget, name, value)
    return widget


def _indicator(parent: QWidget, channel: str) -> PyDMByteIndicator:
    """One green/grey lamp (DMOV, SETTLED)."""
    lamp = PyDMByteIndicator(parent, init_channel=channel)
    lamp.numBits = 1
    lamp.showLabels = False
    lamp.setMaximumWidth(36)
    return lamp


class InstrumentPanel(Display):
    """One instrument's panel, built from the macros (no .ui file to keep in step)."""

    def __init__(self, parent: QWidget | None = None, args: list | None = None, macros: dict | None = None) -> None:
        super().__init__(parent=parent, args=args, macros=macros)
        macros = macros or {}
        self.instrument = str(macros.get("INSTRUMENT", "D11"))
        self.motors = [m for m in str(macros.get("MOTORS", "")).split(",") if m]
        self.prefix = f"pva://{self.instrument}:"
        self._watchers: list[PyDMChannel] = []
        self._connected: set[str] = set()
        self.setWindowTitle(f"Instrument control — {self.instrument}")
        self._build()
        self._watch_puts()
        self._watch_connections()

    def pv(self, name: str) -> str:
        return self.prefix + name

    # -- layout

    def _build(self) -> None:
        root = QVBoxLayout(self)
        heading = QLabel(f"<b>Instrument control — {self.instrument}</b>", self)
        heading.setStyleSheet("font-size: 16pt;")
        root.addWidget(heading)
        if is_read_only():
            note = QLabel(READ_ONLY_NOTE, self)
            note.setStyleSheet("background: #fde293; color: #3c2a00; padding: 4px;")
            root.addWidget(note)
        self.status = QLabel("connecting…", self)
        root.addWidget(self.status)
        self.write_error = QLabel("", self)
        self.write_error.setObjectName("write_error")
        self.write_error.setWordWrap(True)
        self.write_error.setStyleSheet("color: #b3261e; font-weight: bold;")
        self.write_error.setMinimumHeight(self.status.sizeHint().height())  # no jump when it shows
        root.addWidget(self.write_error)

        columns = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(self._motors_box())
        left.addWidget(self._sample_box())
        left.addWidget(self._run_box())
        left.addStretch(1)
        columns.addLayout(left, 1)
        columns.addWidget(self._plot(), 1)
        root.addLayout(columns, 1)

    def _motors_box(self) -> QGroupBox:
        box = QGroupBox("Motors", self)
        grid = QGridLayout(box)
        for col, text in enumerate(("axis", "setpoint (VAL)", "readback (RBV)", "done")):
            grid.addWidget(QLabel(f"<i>{text}</i>", box), 0, col)
        for row, motor in enumerate(self.motors, start=1):
            name = QLabel(motor, box)
            name.setToolTip(f"{self.instrument}:{motor}")
            grid.addWidget(name, row, 0)
            setpoint = _field(box, SetpointEdit, self.pv(f"{motor}.VAL"), showUnits=True, **MOTOR_PRECISION)
            grid.addWidget(setpoint, row, 1)
            grid.addWidget(_field(box, PyDMLabel, self.pv(f"{motor}.RBV"), showUnits=True, **MOTOR_PRECISION), row, 2)
            grid.addWidget(_indicator(box, self.pv(f"{motor}.DMOV")), row, 3)
        return box

    def _sample_box(self) -> QGroupBox:
        box = QGroupBox("Sample, beam and detector", self)
        grid = QGridLayout(box)
        grid.addWidget(QLabel("temperature setpoint (K)", box), 0, 0)
        grid.addWidget(_field(box, SetpointEdit, self.pv("TEMP:SP")), 0, 1)
        grid.addWidget(QLabel("temperature (K)", box), 1, 0)
        grid.addWidget(_field(box, PyDMLabel, self.pv("TEMP:RBV"), precisionFromPV=False, precision=3), 1, 1)
        grid.addWidget(QLabel("settled", box), 1, 2)
        grid.addWidget(_indicator(box, self.pv("TEMP:SETTLED")), 1, 3)
        grid.addWidget(QLabel("shutter", box), 2, 0)
        grid.addWidget(_field(box, PyDMEnumComboBox, self.pv("SHUTTER")), 2, 1)
        grid.addWidget(QLabel("detector rate (counts/s)", box), 3, 0)
        grid.addWidget(_field(box, PyDMLabel, self.pv("DET:RATE"), precisionFromPV=False, precision=1), 3, 1)
        return box

    def _run_box(self) -> QGroupBox:
        box = QGroupBox("Run control", self)
        grid = QGridLayout(box)
        start = PyDMPushButton(box, label="Start run", pressValue=1, init_channel=self.pv("RUN:START"))
        stop = PyDMPushButton(box, label="Stop run", pressValue=1, init_channel=self.pv("RUN:STOP"))
        grid.addWidget(start, 0, 0)
        grid.addWidget(stop, 0, 1)
        grid.addWidget(QLabel("proposal", box), 1, 0)
        grid.addWidget(_field(box, SetpointEdit, self.pv("RUN:PROPOSAL"), displayFormat=DisplayFormat.String), 1, 1)
        rows = (("state", "RUN:STATE"), ("run number", "RUN:NUMBER"),
                ("message", "RUN:MESSAGE"), ("file", "RUN:FILE"))
        for row, (text, pv) in enumerate(rows, start=2):
            grid.addWidget(QLabel(text, box), row, 0)
            label = _field(box, PyDMLabel, self.pv(pv), displayFormat=DisplayFormat.String)
            label.setWordWrap(True)
            grid.addWidget(label, row, 1)
        return box

    def _plot(self) -> PyDMTimePlot:
        plot = PyDMTimePlot(self)
        plot.setTimeSpan(120)
        plot.setShowLegend(True)
        plot.addYChannel(y_channel=self.pv("DET:RATE"), name="detector rate (counts/s)", color="#1a73e8", lineWidth=2)
        return plot

    # -- refused writes and connections

    def _watch_puts(self) -> None:
        self._put_errors = PutErrors()
        self._put_errors.refused.connect(self._show_refused)
        for name in PUT_LOGGERS:
            logging.getLogger(name).addHandler(self._put_errors)

    def _show_refused(self, message: str) -> None:
        log.warning("write refused: %s", message)
        self.write_error.setText(f"Write refused: {message}")
        field = QApplication.focusWidget()
        if isinstance(field, SetpointEdit):
            field.clearFocus()  # back to the value the instrument has

    def channel_addresses(self) -> list[str]:
        """Every channel a widget of the panel uses, once."""
        addresses: list[str] = []
        for widget in self.findChildren(QWidget):
            channels = getattr(widget, "channels", None)
            for channel in (channels() or []) if callable(channels) else []:
                if channel.address and channel.address not in addresses:
                    addresses.append(channel.address)
        return addresses

    def _watch_connections(self) -> None:
        addresses = self.channel_addresses()
        for address in addresses:
            watcher = PyDMChannel(address=address, connection_slot=partial(self._connection, address, len(addresses)))
            watcher.connect()
            self._watchers.append(watcher)

    def _connection(self, address: str, total: int, connected: bool) -> None:
        before = len(self._connected)
        (self._connected.add if connected else self._connected.discard)(address)
        if len(self._connected) == before:
            return
        if not connected:
            log.warning("disconnected from %s", address)
        text = f"connected {len(self._connected)}/{total} channels"
        self.status.setText(text)
        (log.info if len(self._connected) == total or not connected else log.debug)(text)


intelclass = InstrumentPanel

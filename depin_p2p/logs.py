"""structlog configuration: human output on a terminal, JSON lines otherwise.

Call :func:`configure_logging` once at start, after importing libp2p (which
resets the ``libp2p`` logger on import).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

_OPEN_FILES: list[TextIO] = []

_STDLIB_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _Tee:
    """A file-like that writes each line to several streams."""

    def __init__(self, *streams: TextIO) -> None:
        self._streams = streams

    def write(self, text: str) -> int:
        for s in self._streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self._streams:
            s.flush()


def configure_logging(
    *, fmt: str = "auto", level: str = "info", file: Path | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog for the process.

    Args:
        fmt: ``auto`` (human when ``stream`` is a terminal, else JSON), ``human`` or ``json``.
        level: ``debug`` | ``info`` | ``warning`` | ``error``.
        file: when set, JSON lines are also appended there (human output stays on the terminal).
        stream: where to write; stderr by default.
    """
    close_log_files()
    out = stream if stream is not None else sys.stderr
    human = fmt == "human" or (fmt == "auto" and out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if human:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    processors = [*shared, structlog.processors.format_exc_info, renderer]
    sink: Any = out
    if file is not None:
        log_file = file.open("a", encoding="utf-8", buffering=1)
        _OPEN_FILES.append(log_file)
        if human:
            # Terminal gets the human form; the file always gets JSON lines.
            json_render = structlog.processors.JSONRenderer(sort_keys=True)
            tee = _FileTee(log_file, json_render)
            processors = [*shared, structlog.processors.format_exc_info, tee, renderer]
        else:
            sink = _Tee(out, log_file)
    # Standard-library loggers (libp2p's among them), only above the chosen level, go through
    # structlog like everything else: a JSON log stays one JSON object per line.
    stdlib_level = max(_LEVELS[level], logging.WARNING)
    # The handler filters too: some libp2p loggers set their own level (INFO chatter every 10 s).
    logging.basicConfig(level=stdlib_level, handlers=[_StructlogHandler(stdlib_level)], force=True)
    _route_libp2p_loggers()
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sink),
        cache_logger_on_first_use=False,
    )


def close_log_files() -> None:
    """Close log files opened by :func:`configure_logging` (at shutdown, or before reconfiguring)."""
    while _OPEN_FILES:
        _OPEN_FILES.pop().close()


class _FileTee:
    """A processor that writes the event as JSON to a file, then passes it on."""

    def __init__(self, fh: TextIO, render: Any) -> None:
        self._fh = fh
        self._render = render

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        self._fh.write(self._render(logger, name, dict(event)) + "\n")
        return event


class _StructlogHandler(logging.Handler):
    """A stdlib handler that re-emits each record as the structlog event ``log.stdlib``.

    The record's logger name and message become keys (``logger``, ``message``);
    an exception becomes the usual ``exception`` key.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad %-format in a third-party call
            message = f"{record.msg!r} % {record.args!r}"
        kwargs: dict[str, Any] = {"logger": record.name, "message": message}
        if record.exc_info:
            kwargs["exc_info"] = record.exc_info
        level = max((lv for lv in _STDLIB_LEVELS if lv <= record.levelno), default=logging.DEBUG)
        structlog.get_logger(record.name).log(level, "log.stdlib", **kwargs)


def _route_libp2p_loggers() -> None:
    """libp2p gives some of its loggers handlers of their own: send them to the root's instead."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("libp2p") and isinstance(logger, logging.Logger):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True

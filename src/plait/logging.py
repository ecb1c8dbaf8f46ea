"""Console and file logging for scripts: radical.asyncflow's ``init_default_logger``.

This is the one place plait configures logging handlers, and only when a script asks
(the library itself only logs to ``logging.getLogger(__name__)``; ``plait run`` calls
:func:`init_default_logger`). The console handler is rich's ``RichHandler`` when the
output is a terminal and ``use_colors`` is true (``plait[progress]`` brings rich);
otherwise, and in files, plain text lines. A structured handler writes one JSON object
per record.

Calling :func:`init_default_logger` again replaces the handlers it installed before on
that logger instead of adding a second set, so a line is never printed twice.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import IO, Any

__all__ = ["StructuredLogger", "get_logger", "get_structured_logger", "init_default_logger"]

STYLES = {
    "modern": "%(asctime)s.%(msecs)03d │ %(levelname)-8s │ [%(short_name)s] %(message)s",
    "core": "%(asctime)s.%(msecs)03d [%(levelname)s] %(name)s: %(message)s",
    "execution_backend": "%(asctime)s.%(msecs)03d %(levelname)-8s [%(short_name)s] %(message)s",
    "minimal": "%(levelname)s: %(message)s",
}
"""The line formats of ``style=``; ``show_details`` adds the thread and process ids."""

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_MARK = "_plait_handler"
_STRUCTURED_DEFAULT = "plait.logs.json"


def _level(value: int | str) -> int:
    if isinstance(value, int):
        return value
    number = logging.getLevelName(value.upper())
    if not isinstance(number, int):
        raise ValueError(
            f"unknown log level {value!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return number


class _Details(logging.Filter):
    """Adds ``short_name`` (the logger's last part) and ``thread_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.short_name = record.name.rsplit(".", 1)[-1]
        record.thread_id = threading.get_native_id()
        return True


class _TextFormatter(logging.Formatter):
    def __init__(self, style: str, show_details: bool) -> None:
        if style not in STYLES:
            raise ValueError(f"unknown log style {style!r}: use one of {', '.join(STYLES)}")
        fmt = STYLES[style]
        if show_details:
            fmt = fmt.replace("%(message)s", "[TID:%(thread_id)s PID:%(process)d] %(message)s")
        super().__init__(fmt, DATE_FORMAT)


class _JsonFormatter(logging.Formatter):
    """One JSON object per record, with the fields given to a :class:`StructuredLogger`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": self.formatTime(record, DATE_FORMAT),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": getattr(record, "thread_id", record.thread),
            "process": record.process,
        }
        entry.update(getattr(record, "structured", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("NO_COLOR") is None


def _console(use_colors: bool, style: str, show_details: bool) -> logging.Handler:
    if use_colors and _is_terminal(sys.stdout):
        try:
            from rich.console import Console
            from rich.logging import RichHandler
        except ImportError:
            pass
        else:
            handler: logging.Handler = RichHandler(
                console=Console(file=sys.stdout),
                show_path=show_details,
                rich_tracebacks=True,
                log_time_format="[%X]",
            )
            handler.setFormatter(logging.Formatter("[%(short_name)s] %(message)s"))
            return handler
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_TextFormatter(style, show_details))
    return handler


def _file(path: str | os.PathLike[str], formatter: logging.Formatter) -> logging.Handler:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(formatter)
    return handler


def init_default_logger(
    log_level: int | str = logging.INFO,
    *,
    output_file: str | os.PathLike[str] | None = None,
    file_log_level: int | str | None = None,
    use_colors: bool = True,
    show_details: bool = False,
    style: str = "modern",
    clear_handlers: bool = False,
    logger_name: str | None = None,
    structured_logging: bool = False,
    structured_file: str | os.PathLike[str] | None = None,
) -> logging.Logger:
    """Log to the console (and to files, if asked), as radical.asyncflow's function does.

    Args:
        log_level: the console's level (a number or a name such as ``"DEBUG"``).
        output_file: also write plain text lines to this file.
        file_log_level: the files' level; ``log_level`` by default.
        use_colors: colours (rich) when stdout is a terminal and ``NO_COLOR`` is unset.
        show_details: add thread and process ids to each line.
        style: ``"modern"``, ``"core"``, ``"execution_backend"`` or ``"minimal"``.
        clear_handlers: remove every handler the logger had before (not only plait's).
        logger_name: the logger to configure; the root logger by default.
        structured_logging: also write JSON lines, to ``structured_file`` or, by
            default, next to ``output_file`` with a ``.json`` suffix, or
            ``plait.logs.json`` in the cwd.
        structured_file: where the JSON lines go.

    Returns:
        The configured logger.

    Raises:
        ValueError: an unknown level or style.
    """
    console_level = _level(log_level)
    files_level = console_level if file_log_level is None else _level(file_log_level)
    text = _TextFormatter(style, show_details)  # checks the style before anything changes
    logger = logging.getLogger(logger_name)
    for old in list(logger.handlers):
        if clear_handlers or getattr(old, _MARK, False):
            logger.removeHandler(old)
            old.close()
    handlers: list[tuple[logging.Handler, int]] = [
        (_console(use_colors, style, show_details), console_level)
    ]
    if output_file is not None:
        handlers.append((_file(output_file, text), files_level))
    if structured_logging:
        if structured_file is None:
            structured_file = (
                Path(output_file).with_suffix(".json")
                if output_file is not None
                else _STRUCTURED_DEFAULT
            )
        handlers.append((_file(structured_file, _JsonFormatter()), files_level))
    for handler, level in handlers:
        handler.setLevel(level)
        handler.addFilter(_Details())
        setattr(handler, _MARK, True)
        logger.addHandler(handler)
    logger.setLevel(min(level for _, level in handlers))
    logging.captureWarnings(True)
    logger.debug(
        "logging configured: console %s, file %s, structured %s, style %s",
        logging.getLevelName(console_level),
        output_file or "off",
        structured_file if structured_logging else "off",
        style,
    )
    return logger


class StructuredLogger:
    """A logger whose calls take fields as keywords: ``log.info("done", task="t1", n=3)``.

    The fields go into the JSON lines of the structured handler; everything else a
    :class:`logging.Logger` has is reached through this object as well.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def _log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        exc_info = fields.pop("exc_info", None)
        self.logger.log(level, message, exc_info=exc_info, extra={"structured": fields})

    def debug(self, message: str, **fields: Any) -> None:
        self._log(logging.DEBUG, message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._log(logging.INFO, message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log(logging.ERROR, message, fields)

    def critical(self, message: str, **fields: Any) -> None:
        self._log(logging.CRITICAL, message, fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)


def get_structured_logger(
    name: str | None = None, level: int | str = logging.INFO
) -> StructuredLogger:
    """A :class:`StructuredLogger`; configures structured logging if the logger has no handler."""
    base = logging.getLogger(name)
    if not base.handlers:
        init_default_logger(level, logger_name=name, structured_logging=True)
    return StructuredLogger(base)


def get_logger(name: str | None = None, level: int | str = logging.INFO) -> logging.Logger:
    """``logging.getLogger(name)``, after a default console set-up if nothing logs yet."""
    if not logging.getLogger().handlers:
        init_default_logger(level, logger_name=name)
    return logging.getLogger(name)

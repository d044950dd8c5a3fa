"""Run loggers: Dagster's console logger, and ``file``, which appends every event of a run
to a file (``lgsid demo`` sends the event log there and keeps the console for its own
progress lines)."""

import logging
from pathlib import Path

import dagster as dg

EVENT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


@dg.logger(
    {
        "path": dg.Field(str, description="file the run's events are appended to"),
        "log_level": dg.Field(str, is_required=False, default_value="DEBUG"),
    },
    description="Every event of the run appended to a file.",
)
def event_file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A logger appending the run's events to ``path`` (its folder is created)."""
    path = Path(init_context.logger_config["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.Logger("lgsid_events", level=init_context.logger_config["log_level"])
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(EVENT_FORMAT))
    logger.addHandler(handler)
    return logger


LOGGERS = {"console": dg.colored_console_logger, "file": event_file_logger}

"""Log and trace settings changed at run time: Triton's keys, their mapping onto Python
logging and the trace sampler, and the refusals."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from inferbridge.errors import InvalidInput
from inferbridge.observability.logs import LOG_SETTINGS, configure_logging
from inferbridge.observability.trace_settings import TraceSettings

_ALL = 2**64 - 1  # a trace id whose low bits sample only at ratio 1


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, LOG_SETTINGS.current())
    configure_logging("info")
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    LOG_SETTINGS.update({k: v for k, v in saved[2].items() if k != "log_file"})


def test_log_levels_switch_at_run_time(captured: io.StringIO) -> None:
    log = logging.getLogger("inferbridge.test")
    assert LOG_SETTINGS.current() == {
        "log_file": "",
        "log_info": True,
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": 0,
        "log_format": "default",
    }
    log.debug("hidden debug")
    answer = LOG_SETTINGS.update({"log_verbose_level": 1, "log_info": False})
    assert answer["log_verbose_level"] == 1 and answer["log_info"] is False
    log.debug("shown debug")
    log.info("hidden info")
    LOG_SETTINGS.update({"log_warnings": False})  # the protocol document's spelling
    log.warning("hidden warning")
    log.error("shown error")
    logging.getLogger("inferbridge.access").info("access line")  # never switched off
    text = captured.getvalue()
    assert "shown debug" in text and "shown error" in text and "access line" in text
    assert "hidden" not in text


def test_log_format_iso8601_and_json(captured: io.StringIO) -> None:
    log = logging.getLogger("inferbridge.test")
    LOG_SETTINGS.update({"log_format": "ISO8601"})
    log.info("iso line")
    LOG_SETTINGS.update({"log_format": "json"})
    log.info("json line")
    first, second = captured.getvalue().splitlines()
    assert first[10] == "T" and first.split(" ")[0].endswith("Z") and first.endswith("iso line")
    assert second.startswith("{") and '"message":"json line"' in second


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"log_colour": True}, "unknown log setting 'log_colour'"),
        ({"log_info": "yes"}, "'log_info' must be a boolean"),
        ({"log_verbose_level": -1}, "integer >= 0"),
        ({"log_format": "xml"}, "'log_format' must be one of"),
        ({"log_file": "/tmp/x.log"}, "cannot be changed at run time"),
        ({"log_info": False, "bogus": 1}, "bogus"),  # nothing applied: all or nothing
    ],
)
def test_log_setting_refusals(
    captured: io.StringIO, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        LOG_SETTINGS.update(changes)
    assert LOG_SETTINGS.current()["log_info"] is True


def test_trace_settings_map_onto_the_sampler() -> None:
    settings = TraceSettings(1.0)
    assert settings.current() == {
        "trace_level": ["TIMESTAMPS"],
        "trace_rate": "1",
        "trace_count": "-1",
        "log_frequency": "0",
        "trace_file": "",
        "trace_mode": "opentelemetry",
    }
    assert settings.sample(None, _ALL) and settings.new_traces
    settings.update({"trace_rate": "1000"})
    assert settings.current()["trace_rate"] == "1000"
    assert not settings.sample(None, _ALL)  # a high trace id is outside 1/1000
    assert settings.sample(None, 1)
    settings.update({"trace_level": ["OFF"]})
    assert not settings.sample(None, 1) and not settings.new_traces


def test_trace_count_runs_out() -> None:
    settings = TraceSettings(1.0)
    settings.update({"trace_count": "2"})
    assert [settings.sample(None, 1) for _ in range(3)] == [True, True, False]
    assert settings.current()["trace_count"] == "0" and not settings.new_traces


def test_per_model_trace_settings() -> None:
    settings = TraceSettings(1.0)
    answer = settings.update({"trace_level": ["OFF"]}, model="quiet")
    assert answer["trace_level"] == ["OFF"] and answer["trace_rate"] == "1"
    assert not settings.sample("quiet", 1) and settings.sample("other", 1)
    settings.update({"trace_rate": "4"})  # global: the model keeps its own level
    assert settings.current("quiet")["trace_rate"] == "4"
    settings.update({"trace_level": None}, model="quiet")  # back to the global level
    assert settings.sample("quiet", 1)
    settings.update({"trace_level": ["OFF"]}, model="quiet")
    settings.update({}, model="quiet")  # an empty update clears the model's settings
    assert settings.current("quiet")["trace_level"] == ["TIMESTAMPS"]


def test_a_rate_of_zero_reads_as_off() -> None:
    settings = TraceSettings(0.0)
    assert settings.current()["trace_level"] == ["OFF"] and not settings.new_traces
    settings.update({"trace_level": ["TIMESTAMPS"]})
    assert settings.new_traces and settings.sample(None, _ALL)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trace_colour": "1"}, "unknown trace setting 'trace_colour'"),
        ({"trace_level": ["TENSORS"]}, "TENSORS is not supported"),
        ({"trace_level": ["OFF", "TIMESTAMPS"]}, "OFF cannot be combined"),
        ({"trace_level": ["LOUD"]}, "unknown level"),
        ({"trace_rate": "0"}, "at least 1"),
        ({"trace_rate": "often"}, "must be an integer"),
        ({"trace_count": "-2"}, "-1 \\(no limit\\) or more"),
        ({"trace_file": "/tmp/trace.json"}, "only '' is accepted"),
        ({"trace_mode": "triton"}, "only 'opentelemetry' is accepted"),
        ({"log_frequency": "100"}, "only '0' is accepted"),
        ({"trace_rate": None}, "a global setting cannot be cleared"),
    ],
)
def test_trace_setting_refusals(changes: dict[str, object], message: str) -> None:
    settings = TraceSettings(1.0)
    with pytest.raises(InvalidInput, match=message):
        settings.update(changes)


def test_tracing_off_at_start_refuses_to_start_traces() -> None:
    settings = TraceSettings(None)
    assert settings.current()["trace_level"] == ["OFF"]
    assert settings.update({"trace_level": ["OFF"], "trace_mode": "opentelemetry"})
    for changes in ({"trace_level": ["TIMESTAMPS"]}, {"trace_rate": "10"}):
        with pytest.raises(InvalidInput, match="start it with --trace-mode opentelemetry"):
            settings.update(changes)

"""Settings: SEGPIPE_* variables, a config file, precedence, one-line errors, `config show`,
and the nightly schedule's defaults and cron validation."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.schedule import DEFAULT_CRON, DEFAULT_TIMEZONE
from flows.settings import load_settings, render_yaml
from segcore.errors import ConfigError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SEGPIPE_") and not name.startswith("SEGPIPE_FAULT_"):
            monkeypatch.delenv(name)


def _write(path, text):
    path.write_text(text)
    return path


def test_defaults():
    s = load_settings().settings
    assert s.schedule.cron == DEFAULT_CRON and s.schedule.timezone == DEFAULT_TIMEZONE
    assert s.model is None and s.inbox is None and s.run.overrides() == {}
    assert s.log_level.value == "WARNING"


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_file_env_and_flags_in_order_of_precedence(suffix, tmp_path, monkeypatch):
    text = ("model: from-file\nout: /file/out\nschedule:\n  timezone: Europe/Paris\n"
            "run:\n  workers: 3\n  tile: 256\n") if suffix == ".yaml" else (
        'model = "from-file"\nout = "/file/out"\n[schedule]\ntimezone = "Europe/Paris"\n'
        "[run]\nworkers = 3\ntile = 256\n")
    cfg = _write(tmp_path / f"segpipe{suffix}", text)
    monkeypatch.setenv("SEGPIPE_CONFIG", str(cfg))
    monkeypatch.setenv("SEGPIPE_MODEL", "from-env")
    monkeypatch.setenv("SEGPIPE_RUN__WORKERS", "2")
    monkeypatch.setenv("SEGPIPE_SCHEDULE__CRON", "30 3 * * *")
    loaded = load_settings(flags={"model": "from-flag", "run.tile": 128})
    s = loaded.settings
    assert s.model == "from-flag"                      # flag > env > file
    assert s.run.workers == 2                          # env > file
    assert s.run.tile == 128                           # flag > file
    assert str(s.out) == "/file/out"                   # file > default
    assert s.schedule.timezone == "Europe/Paris" and s.schedule.cron == "30 3 * * *"
    assert s.run.overrides() == {"workers": 2, "tile": 128}
    assert loaded.origins[("run", "workers")] == "env SEGPIPE_RUN__WORKERS"
    assert loaded.origins[("out",)] == f"file {cfg}"


def test_config_flag_beats_segpipe_config(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGPIPE_CONFIG", str(_write(tmp_path / "a.yaml", "model: a\n")))
    assert load_settings(tmp_path / "a.yaml").settings.model == "a"
    assert load_settings(_write(tmp_path / "b.yaml", "model: b\n")).settings.model == "b"


@pytest.mark.parametrize(("env", "words"), [
    ({"SEGPIPE_RUN__WORKERS": "abc"}, ["SEGPIPE_RUN__WORKERS", "integer", "'abc'"]),
    ({"SEGPIPE_RUN__WORKERS": "0"}, ["SEGPIPE_RUN__WORKERS", "greater than or equal to 1", "received '0'"]),
    ({"SEGPIPE_SCHEDULE__CRON": "61 * * * *"}, ["SEGPIPE_SCHEDULE__CRON", "cron", "'61 * * * *'"]),
    ({"SEGPIPE_SCHEDULE__TIMEZONE": "Mars/Olympus"}, ["TIMEZONE", "IANA", "Mars/Olympus"]),
    ({"SEGPIPE_LOG_LEVEL": "loud"}, ["SEGPIPE_LOG_LEVEL", "'DEBUG'", "LOUD"]),
])
def test_invalid_env_values_name_the_variable(env, words, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_file_errors_name_the_file_and_key(tmp_path):
    bad_key = _write(tmp_path / "typo.yaml", "run:\n  wrokers: 2\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: run.wrokers: unknown setting "
                                          r"\(did you mean 'workers'\?\)"):
        load_settings(bad_key)
    bad_value = _write(tmp_path / "value.yaml", "run:\n  tile: -4\n")
    with pytest.raises(ConfigError, match=r"value.yaml: run.tile: .*greater than or equal to 1.*received -4"):
        load_settings(bad_value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(_write(tmp_path / "list.yaml", "- a\n- b\n"))


def test_config_show_prints_values_and_origins(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "c.yaml", "inbox: /data/inbox\nrun:\n  tile: 256\n")
    monkeypatch.setenv("SEGPIPE_MODEL", "demo-satellite")
    result = runner.invoke(app, ["config", "show", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    lines = {ln.split(":")[0].strip(): ln for ln in result.output.splitlines()}
    assert "demo-satellite" in lines["model"] and "env SEGPIPE_MODEL" in lines["model"]
    assert "/data/inbox" in lines["inbox"] and f"file {cfg}" in lines["inbox"]
    assert "256" in lines["tile"] and "file" in lines["tile"]
    assert DEFAULT_CRON in lines["cron"] and "# default" in lines["cron"]
    import yaml

    assert yaml.safe_load(result.output)["run"]["tile"] == 256  # valid YAML (comments aside)


def test_config_show_invalid_is_one_line_exit_2(monkeypatch):
    monkeypatch.setenv("SEGPIPE_RUN__SCENES_IN_FLIGHT", "many")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "SEGPIPE_RUN__SCENES_IN_FLIGHT" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_default_schedule_is_the_shared_constant():
    from flows.nightly import nightly_schedule

    schedule = nightly_schedule()
    assert schedule.cron == DEFAULT_CRON and schedule.timezone == DEFAULT_TIMEZONE
    other = nightly_schedule("15 1 * * 1-5", "Europe/Berlin")
    assert (other.cron, other.timezone) == ("15 1 * * 1-5", "Europe/Berlin")


@pytest.mark.parametrize("args", [["--cron", "0 25 * * *"], ["--cron", "every night"],
                                  ["--timezone", "Europe/Atlantis"]])
def test_nightly_bad_schedule_exits_2_with_one_line(args, tmp_path):
    (tmp_path / "in").mkdir()
    result = runner.invoke(app, ["nightly", "--inbox", str(tmp_path / "in"), "--out",
                                 str(tmp_path / "out"), "--model", "demo-satellite", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0] and args[1] in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_nightly_unusable_inputs_exit_2(tmp_path, monkeypatch):
    result = runner.invoke(app, ["nightly", "--once", "--out", str(tmp_path / "o"),
                                 "--model", "demo-satellite"])
    assert result.exit_code == 2 and "--inbox is required" in result.output
    monkeypatch.setenv("SEGPIPE_INBOX", str(tmp_path / "nowhere"))
    result = runner.invoke(app, ["nightly", "--once", "--out", str(tmp_path / "o"),
                                 "--model", "demo-satellite"])
    assert result.exit_code == 2 and "nowhere" in result.output and "no such" in result.output
    (tmp_path / "in").mkdir()
    result = runner.invoke(app, ["nightly", "--once", "--inbox", str(tmp_path / "in"), "--out",
                                 str(tmp_path / "o"), "--model", "demo-satelite"])
    assert result.exit_code == 2 and "did you mean 'demo-satellite'" in result.output
    result = runner.invoke(app, ["nightly", "--once", "--inbox", str(tmp_path), "--out",
                                 str(tmp_path / "o"), "--model", "demo-satellite"])
    assert result.exit_code == 2 and "inside --inbox" in result.output
    assert "Traceback" not in result.output


def test_yaml_rendering_round_trips():
    import yaml

    loaded = load_settings(flags={"model": "m: with colon"})
    assert yaml.safe_load(render_yaml(loaded))["model"] == "m: with colon"


def test_deployment_has_the_schedule_entrypoint_and_parameters():
    """What `segpipe nightly` serves (built, not served): deploy/prefect/prefect.yaml mirrors it."""
    from flows.nightly import nightly_pass, nightly_schedule
    from flows.schedule import DEPLOYMENT_NAME, FLOW_NAME

    params = {"inbox": "/data/inbox", "out": "/data/out", "model": "demo-satellite",
              "options": {"workers": 2}}
    deployment = nightly_pass.to_deployment(name=DEPLOYMENT_NAME, schedule=nightly_schedule(),
                                            parameters=params)
    assert nightly_pass.name == FLOW_NAME
    assert deployment.entrypoint == "flows/nightly.py:nightly_pass"
    (schedule,) = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (DEFAULT_CRON, DEFAULT_TIMEZONE)
    schema = deployment._parameter_openapi_schema.model_dump()
    assert schema["required"] == ["inbox", "out", "model"]

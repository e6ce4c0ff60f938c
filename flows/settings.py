"""Environment settings of the entry points: ``SEGPIPE_*`` variables and a config file.

Where a value comes from, strongest first:

1. a command-line flag (``--model``, ``--workers`` ...);
2. an environment variable: ``SEGPIPE_<KEY>``, nested keys joined by ``__``
   (``SEGPIPE_RUN__WORKERS=2``, ``SEGPIPE_SCHEDULE__CRON="0 3 * * *"``);
3. the config file named by ``--config`` or ``SEGPIPE_CONFIG`` (YAML, or TOML
   when it ends in ``.toml``), with the same keys (``run: {workers: 2}``);
4. the defaults below.

The file is the shared baseline (baked into an image or a ConfigMap), the
environment adjusts one process or pod, and a flag is the most explicit,
per-invocation choice; this is also pydantic-settings' own order
(init > env > files). Settings live at the edges only (CLI, flows): the engine
(``pipeline``) receives plain :class:`~pipeline.options.RunOptions`.
"""

from __future__ import annotations

import os
import tomllib
import zoneinfo
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings, EnvSettingsSource, InitSettingsSource, PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from flows.schedule import DEFAULT_CRON, DEFAULT_TIMEZONE
from segcore.errors import ConfigError
from segcore.hints import did_you_mean

ENV_PREFIX = "SEGPIPE_"
CONFIG_ENV = "SEGPIPE_CONFIG"


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def check_cron(value: str) -> str:
    """A five-field cron expression Prefect accepts, or ValueError naming what is wrong."""
    from prefect._vendor.croniter import croniter

    text = str(value).strip()
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise ValueError(f"expected a 5-field cron expression such as '{DEFAULT_CRON}' "
                         f"(minute hour day month weekday), received {value!r}")
    if any(part.casefold() in ("r", "h") for part in text.split()):
        raise ValueError(f"random/hashed cron fields (R, H) are not supported, received {value!r}")
    return text


def check_timezone(value: str) -> str:
    """An IANA time zone name (``Europe/Paris``, ``UTC``), or ValueError."""
    try:
        zoneinfo.ZoneInfo(str(value))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"expected an IANA time zone such as 'UTC' or 'Europe/Paris', "
                         f"received {value!r}") from None
    return str(value)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScheduleSettings(_Section):
    """When ``segpipe nightly`` runs its pass."""

    cron: str = DEFAULT_CRON
    timezone: str = DEFAULT_TIMEZONE

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        return check_timezone(v)


class RunSettings(_Section):
    """Engine options (:class:`pipeline.options.RunOptions`); unset: bundle/machine defaults."""

    workers: int | None = Field(default=None, ge=1)
    gpus_per_worker: float | None = Field(default=None, ge=0.0)
    ray_address: str | None = None
    tile: int | None = Field(default=None, ge=1)
    scenes_in_flight: int | None = Field(default=None, ge=1)

    def overrides(self) -> dict[str, Any]:
        """The values set here, as ``RunOptions`` overrides."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Settings(BaseSettings):
    """The effective configuration of ``segpipe nightly`` (and ``segpipe config show``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      extra="forbid", frozen=True)

    config: Path | None = Field(default=None, description="config file (YAML or TOML)")
    model: str | None = Field(default=None, description="bundled model name or bundle path")
    inbox: Path | None = Field(default=None, description="directory the nightly pass scans")
    out: Path | None = Field(default=None, description="output directory")
    log_level: LogLevel = LogLevel.WARNING
    schedule: ScheduleSettings = ScheduleSettings()
    run: RunSettings = RunSettings()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return init_settings, env_settings, FileSource(settings_cls, init_settings)


def config_path(init_kwargs: dict | None = None) -> Path | None:
    """The config file: ``--config`` (init kwarg) else ``SEGPIPE_CONFIG``."""
    value = (init_kwargs or {}).get("config") or os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML or TOML mapping of settings, or one clear ConfigError."""
    try:
        text = Path(path).read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config file {path}: cannot read: {first}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings, "
                          f"received {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


class FileSource(PydanticBaseSettingsSource):
    """Settings from the YAML/TOML file named by ``config`` (flag) or ``SEGPIPE_CONFIG``."""

    def __init__(self, settings_cls: type[BaseSettings], init: InitSettingsSource) -> None:
        super().__init__(settings_cls)
        self.path = config_path(init.init_kwargs)

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ is used
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {} if self.path is None else read_config_file(self.path)


# --- loading with provenance --------------------------------------------------------------

def _leaves(data: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def _nest(flags: dict[str, Any]) -> dict[str, Any]:
    """``{"run.workers": 2, "model": "x"}`` -> ``{"run": {"workers": 2}, "model": "x"}``."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def env_name(loc: tuple) -> str:
    """``("run", "workers")`` -> ``SEGPIPE_RUN__WORKERS``."""
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


class Loaded:
    """Settings plus where each leaf value came from (``flag``/``env``/``file``/``default``)."""

    def __init__(self, settings: Settings, origins: dict[tuple, str], path: Path | None) -> None:
        self.settings = settings
        self.origins = origins
        self.path = path


def _origins(flags: dict, env: dict, file: dict, path: Path | None,
             flag_names: dict[str, str]) -> dict[tuple, str]:
    origins: dict[tuple, str] = {}
    for source, data in (("file", file), ("env", env), ("flag", flags)):
        for loc in _leaves(data):
            if source == "file":
                origins[loc] = f"file {path}"
            elif source == "env":
                origins[loc] = f"env {env_name(loc)}"
            else:
                origins[loc] = f"flag {flag_names.get('.'.join(map(str, loc)), '.'.join(loc))}"
    return origins


def _describe_error(exc: ValidationError, origins: dict[tuple, str]) -> str:
    """One line: which variable/key/flag, what was expected, what was received."""
    first = exc.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    key = ".".join(loc)
    origin = origins.get(loc, "")
    where = {"env": env_name(loc), "file": f"{origin[5:]}: {key}",
             "flag": origin[5:]}.get(origin.split(" ")[0], key)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        return f"{where}: unknown setting{did_you_mean(loc[-1], known)}; known: {', '.join(known)}"
    received = first.get("input")
    tail = "" if "received" in msg else f", received {received!r}"
    return f"{where}: {msg[0].lower()}{msg[1:]}{tail}"


def _known_keys(parent: tuple) -> list[str]:
    model: type[BaseModel] = Settings
    for part in parent:
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else model
    return list(model.model_fields)


def load_settings(config: Path | None = None, flags: dict[str, Any] | None = None, *,
                  flag_names: dict[str, str] | None = None) -> Loaded:
    """Effective settings: flags > ``SEGPIPE_*`` env > config file > defaults.

    ``flags``: dotted keys (``"run.workers"``) to values; ``None`` means "not given".
    ``flag_names``: dotted key -> the flag's spelling, for error messages.

    Raises
    ------
    ConfigError
        One line naming the variable, file key or flag, the expectation and the value.
    """
    init = _nest(flags or {})
    if config is not None:
        init["config"] = str(config)
    path = config_path(init)
    file = read_config_file(path) if path is not None else {}
    env = EnvSettingsSource(Settings, env_prefix=ENV_PREFIX, env_nested_delimiter="__")()
    origins = _origins(init, env, file, path, {"config": "--config", **(flag_names or {})})
    try:
        settings = Settings(**init)
    except ValidationError as exc:
        raise ConfigError(_describe_error(exc, origins)) from None
    return Loaded(settings, origins, path)


def render_yaml(loaded: Loaded) -> str:
    """The effective configuration as YAML, each value commented with its origin."""
    data = loaded.settings.model_dump(mode="json")
    lines: list[str] = []

    def emit(node: dict, loc: tuple, indent: int) -> None:
        for key, value in node.items():
            here = (*loc, key)
            pad = "  " * indent
            if isinstance(value, dict):
                lines.append(f"{pad}{key}:")
                emit(value, here, indent + 1)
                continue
            text = yaml.safe_dump({key: value}, default_flow_style=True, width=10_000).strip()
            text = text.removeprefix("{").removesuffix("}")
            line = f"{pad}{text}"
            lines.append(f"{line:<40}  # {loaded.origins.get(here, 'default')}")

    emit(data, (), 0)
    return "\n".join(lines) + "\n"

"""The configuration model: a YAML file, a dict or a :class:`Config`, plus the environment.

Every value can also come from an environment variable: ``BASTION_`` followed by
the key path in upper case with ``__`` between levels (``BASTION_STORE``,
``BASTION_RATE_LIMITS__ON_STORE_ERROR``). Environment values are parsed as YAML
scalars, so ``BASTION_VALIDATION__MAX_BODY_BYTES=2048`` is a number.

A bad configuration raises :class:`ConfigError`, which lists every problem with
its key path and the reason; nothing starts with a configuration that has one.
"""

from bastion.config.admin import AdminConfig
from bastion.config.clients import ApiKey, ClientsConfig, read_keys_file
from bastion.config.loading import ENV_PREFIX, load_config, read_yaml
from bastion.config.model import (
    Config,
    ConfigError,
    ErrorsConfig,
    LoggingConfig,
    MetricsConfig,
    RoutingConfig,
)

__all__ = [
    "ENV_PREFIX",
    "AdminConfig",
    "ApiKey",
    "ClientsConfig",
    "Config",
    "ConfigError",
    "ErrorsConfig",
    "LoggingConfig",
    "MetricsConfig",
    "RoutingConfig",
    "load_config",
    "read_keys_file",
    "read_yaml",
]

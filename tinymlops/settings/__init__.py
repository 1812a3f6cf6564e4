"""Typed settings: params.yaml, configs/*.yaml and the environment, read in one place.

Every model is strict, frozen and forbids unknown keys, so a typo fails loudly with one line
naming the file, the key and the expected type. Nothing outside this package reads a config file
or os.environ (the import contract checks it).
"""

from tinymlops.settings.environment import Environment, TaskRunnerSettings, key_passphrase, use_local_prefect
from tinymlops.settings.files import ConfigFile, Strict, load, load_yaml, parse
from tinymlops.settings.fleet import FleetEnv
from tinymlops.settings.monitoring import DriftThresholds, MonitoringConfig
from tinymlops.settings.params import (
    DataParams,
    EvaluateParams,
    ModelParams,
    PipelineParams,
    QuantizeParams,
    TrackingConfig,
    TrainParams,
    load_params,
)
from tinymlops.settings.webhook import PrefectEnv, WebhookEnv

__all__ = [
    "ConfigFile",
    "DataParams",
    "DriftThresholds",
    "Environment",
    "EvaluateParams",
    "FleetEnv",
    "ModelParams",
    "MonitoringConfig",
    "PipelineParams",
    "PrefectEnv",
    "QuantizeParams",
    "Strict",
    "TaskRunnerSettings",
    "TrackingConfig",
    "TrainParams",
    "WebhookEnv",
    "load",
    "load_params",
    "key_passphrase",
    "load_yaml",
    "parse",
    "use_local_prefect",
]

"""First-principles performance model of vLLM on one or two nodes (TP vs PP), and a traffic
simulator over co-resident replicas. Pure computation over sourced data files; nothing runs.

Public API:
  resolve_model(alias_or_path) -> ModelArchitecture
  load_hardware(name) -> HardwareProfile
  predict(model, hardware, layout, workload, concurrency, settings, engine) -> Prediction
  simulate(scenario, policy_settings, seed) -> SimResult
"""

from __future__ import annotations

from tuner.perfmodel.architecture import ModelArchitecture, known_models, resolve_model
from tuner.perfmodel.engine import EngineProfile, EngineSettings, ModelConstants, load_engine
from tuner.perfmodel.hardware import HardwareProfile, known_hardware, load_hardware
from tuner.perfmodel.predict import Layout, Prediction, predict

__all__ = [
    "EngineProfile",
    "EngineSettings",
    "HardwareProfile",
    "Layout",
    "ModelArchitecture",
    "ModelConstants",
    "Prediction",
    "known_hardware",
    "known_models",
    "load_engine",
    "load_hardware",
    "predict",
    "resolve_model",
]

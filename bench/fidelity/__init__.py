"""The fidelity pipeline: sample -> train -> measure, in physical units.

``cell`` runs one grid cell (dataset, scaler, model, training, metrics); ``train`` fits a model (values or
Sobolev); ``metrics`` turns predictions and Jacobians into metrics.csv rows; ``evaluate`` and ``diagnose``
measure a checkpoint a user already has.
"""

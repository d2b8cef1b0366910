"""The machinery around the pipelines: the grid config and profiles, the runner, the results schema and folder,
the environment record and the machine (cores, device, threads).

Nothing here imports ``bench.fidelity`` or ``bench.speed``: the runner is handed its cell function.
"""

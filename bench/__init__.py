"""jacbench's harness: Jacobian engines, training, metrics, the suite runner, reports and the CLI."""

"""Stage 2, `artdate train`: the Ray Train driver, each rank's worker, its state and checkpointing,
the training loop, the GPU batch probe and MLflow tracking."""

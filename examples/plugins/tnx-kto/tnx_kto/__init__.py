"""KTO for tunix-dsl. `tnx_kto.schema` is what `tnx lint` imports (no jax); the loss and
the step program load only when a `kto` stage is planned or run."""

"""Backend plugins: configure and report the JAX runtime (Dioptra's ``backend_configs``)."""

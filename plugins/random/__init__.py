"""Random-number plugins: JAX PRNG keys as plain uint32 arrays, deterministic draws."""

"""Evasion attacks (FGM/FGSM, PGD) with ART semantics, in JAX. Inputs are clipped to [0, 1]."""

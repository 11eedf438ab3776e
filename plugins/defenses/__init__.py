"""Defences: input preprocessing (feature squeezing) and adversarial training."""

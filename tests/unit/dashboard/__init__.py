"""Tests of the web dashboard (services/dashboard)."""

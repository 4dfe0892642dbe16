"""Tests of the per-backend support for in-place subset updates."""

"""Plugins: zip bundles checked before any of their code runs, extracted into a content-addressed cache."""

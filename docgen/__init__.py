"""`make docs`: the reference pages written from the code, so that they cannot drift from it.

docs/configuration.md's tables come from the settings dataclasses, docs/make-targets.md from
the Makefile's `## ` comments; tests/test_docs.py fails when a page differs from its output.
"""

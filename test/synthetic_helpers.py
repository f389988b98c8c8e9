"""Shared constants of the synthetic-generator tests (test/synthetic/test_synth.py) and of the
``lmanet synth`` command tests (test/tools/test_synth_cli.py)."""

#: Height and width in pixels of the tiny frames the tests generate.
H, W = 64, 128

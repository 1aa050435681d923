"""A stand-in of Coral's pycoral (only `pycoral.utils.edgetpu`), for tests on a machine without an
Edge TPU: put tests/peers/pycoral_standin on PYTHONPATH. See pycoral/utils/edgetpu.py."""

__version__ = "2.0.0"

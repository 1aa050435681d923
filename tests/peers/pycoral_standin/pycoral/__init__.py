"""A stand-in of Coral's pycoral (github.com/google-coral/pycoral) for tests on a machine without an
Edge TPU: put tests/peers/pycoral_standin on PYTHONPATH. Only `pycoral.utils.edgetpu` is here,
the part the harness uses; see its docstring for what is real and what is not."""

__version__ = "2.0.0"  # pycoral/__init__.py of the 2.0.0 release

"""pycoral.utils: only `edgetpu` is stood in."""

"""The package version, in one place (read by the build and by ``gradvitals.__version__``)."""

__version__ = "0.1.0"

"""The package version (read by the build from here, and by ``polythrottle --version``)."""

__version__ = "0.2.0"

"""BlackRoad OS: one AI computer from a fleet of machines you own."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blackroad")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

"""hstred: reproducible reduction of HST ACS/WFC imaging to drizzled images."""

from hstred._version import __version__

__all__ = ["__version__"]

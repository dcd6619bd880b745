"""depin-p2p: a peer-to-peer node for DePIN devnets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("depin-p2p")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

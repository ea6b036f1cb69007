"""The LINE stand-in: a real HTTP server on loopback that plays the LINE Platform (Messaging API on
both hosts, webhook calls, a customer's phone) for the demo and the tests. See server.py."""

from .client import StandinControl, StandinControlError
from .server import StandinServer
from .state import StandinState
from .webhook import signature

__all__ = ["StandinControl", "StandinControlError", "StandinServer", "StandinState", "signature"]

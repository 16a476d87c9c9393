"""NATS connection, subject names, JetStream set-up, pull consumers, codecs and the API client.

A program that submits and inspects tasks needs one name from here:

    from communication import ClawClient

Exported names are imported on first use (`common/exports.py`): importing a module of this package
does not load the client.
"""

from typing import TYPE_CHECKING

from common.exports import lazy

EXPORTS = {
    "communication.api_client": ["ClawClient"],
    "communication.pages": ["Page"],
}
__all__ = [name for names in EXPORTS.values() for name in names]

if TYPE_CHECKING:
    from communication.api_client import ClawClient as ClawClient
    from communication.pages import Page as Page
else:
    __getattr__ = lazy(__name__, EXPORTS)

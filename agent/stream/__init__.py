"""Live sessions over websockets: one desktop served to many clients (``dw serve``), a remote
desktop client (:class:`RemoteDesktop`), and the browser viewer's wire format.

The protocol is documented in ``docs/protocol.md``; its constants live in :mod:`agent.stream.protocol`.
"""

from agent.stream.protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]

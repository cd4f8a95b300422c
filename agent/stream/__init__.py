"""Live sessions over websockets: one desktop served to many clients (``dw serve``), and the wire
format shared by the server, the remote desktop (:class:`agent.desktops.remote.RemoteDesktop`) and
the browser viewer.

The protocol is documented in ``docs/protocol.md``; its constants live in :mod:`agent.stream.protocol`.
"""

from agent.stream.protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]

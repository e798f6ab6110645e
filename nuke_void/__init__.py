"""VOID for Nuke: the node, the client and the `void` command."""
import os
import sys

# The vendored requests & co. (put there by install.sh) come first, so Nuke's own site-packages cannot shadow them.
_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

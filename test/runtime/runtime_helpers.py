"""What the runtime tests share: the network input size and LMANet's memory length of the
session's graph cache (conftest.py)."""

#: The tests' network input size (H, W) and LMANet's memory length (fill levels 0, 1, 2).
SIZE = (64, 128)
MEMORY_LENGTH = 2

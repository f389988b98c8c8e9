"""``python -m lmanet_ros.node``: run ``lmanet_node`` (see :func:`lmanet_ros.node.main`)."""
from lmanet_ros.node import main

raise SystemExit(main())

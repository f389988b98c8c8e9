"""``python -m lmanet_ros.node``: run ``lmanet_node`` (see :func:`lmanet_ros.node.node.main`)."""
from lmanet_ros.node.node import main

raise SystemExit(main())

"""pip install for venvs without a ROS distribution (robots build with colcon: CMakeLists.txt)."""
from setuptools import find_packages, setup

setup(
    name="lmanet_ros",
    version="0.1.0",
    description="LMANet video semantic segmentation for ROS 2",
    license="Apache-2.0",
    packages=find_packages(include=["lmanet_ros", "lmanet_ros.*"]),
    # csrc/: the attention kernel's source, compiled after installing (see
    # lmanet_ros/models/_attention_ext.py; scripts/setup_venv.sh does it).
    package_data={"lmanet_ros": ["data/*", "data/demo/*", "csrc/*.cpp"]},
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "lmanet = lmanet_ros.tools.cli:main",
            "lmanet_node = lmanet_ros.node:main",
            "lmanet_lifecycle_node = lmanet_ros.node:lifecycle_main",
        ],
    },
)

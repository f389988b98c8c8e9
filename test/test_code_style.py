"""Linters as tests, as ROS packages run ament_flake8: style and pyflakes errors fail the suite."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_flake8_clean():
    targets = [str(ROOT / name) for name in ("lmanet_ros", "test", "benchmarks", "launch")
               if (ROOT / name).exists()]
    proc = subprocess.run([sys.executable, "-m", "flake8", "--config", str(ROOT / "setup.cfg"),
                           *targets], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"flake8 found problems:\n{proc.stdout}{proc.stderr}"


def test_versions_agree():
    package_xml = (ROOT / "package.xml").read_text()
    setup_py = (ROOT / "setup.py").read_text()
    version = package_xml.split("<version>")[1].split("</version>")[0]
    assert f'version="{version}"' in setup_py

"""Test-suite set-up: a private TFDS data dir, quiet TFDS, single CPU device.

Multi-device tests run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set
before JAX starts, so it cannot be flipped inside this process).
"""

import os
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="xnn_tfds_"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache per test session, shared by the xdist workers and the
# subprocesses they start (a re-launched run loads its train step instead of compiling it).
os.environ.setdefault("XNN_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"xnn_test_cache_{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}"))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A sweep of two runs that compute the same thing (train.progress_every_s only changes the display): the
# launcher tests interrupt one (a preemption, a requeue) and compare it with the other, uninterrupted.
TWIN_RUNS_SWEEP = '''
from xnn import sweeps as s
from xnn.configs.default import get_config as _default

def get_config(arg=None):
  c = _default()
  c.train.num_steps = 32
  c.train.checkpoint_every_steps = 16
  c.train.eval_every_epochs = 2.0
  c.train.log_every_steps = 4
  c.train.progress_bar = False
  return c

def get_sweep(arg=None):
  return s.values("train.progress_every_s", [30.0, 31.0])
'''


def run_python(code: str, devices: int = 1, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs ``code`` in a fresh interpreter with ``devices`` simulated CPU devices."""
  full_env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                        env=full_env, cwd=REPO)
  if proc.returncode != 0:
    raise AssertionError(f"subprocess failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                         f"STDERR:\n{proc.stderr[-6000:]}")
  return proc


@pytest.fixture
def tiny_config():
  """The default config, shrunk to a few seconds of training."""
  from xnn.configs.default import get_config
  c = get_config()
  c.train.num_epochs = 2
  c.train.batch_size = 64
  c.train.progress_bar = False
  c.train.log_every_steps = 5
  return c

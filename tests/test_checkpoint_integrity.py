"""Checkpoint integrity: every file of a saved step, every restored array, input position and meta item is
checked against the step's manifest; a step that fails is skipped with one warning, none verified -> error.

Real orbax managers in tmp folders, a small real state (arrays + an optax Adam state) and a real grain
iterator (streaming runs) or the JSON position (device-resident runs).
"""

import fnmatch
import os
import shutil
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO
from xnn.train import checkpoint as ckpt

# Every file orbax (and xnn) writes into a step folder, by item (test_patterns_cover_every_file checks).
FILES = {
    "step": ["_CHECKPOINT_METADATA", "commit_success.txt", ckpt.MANIFEST],
    "state arrays": ["state/d/*", "state/ocdbt.process_0/d/*"],
    "state metadata": ["state/_METADATA", "state/_sharding", "state/array_metadatas/process_0",
                       "state/manifest.ocdbt", "state/ocdbt.process_0/manifest.ocdbt", "state/commit_success.txt"],
    "data item": ["data/process_0-of-1.json", "data/commit_success.txt"],
    "meta item": ["meta/metadata", "meta/commit_success.txt"],
}
PATTERNS = [(item, p) for item, ps in FILES.items() for p in ps]


def make_state(seed: int) -> dict:
  """Parameters (f32 and bf16), batch statistics, an Adam state after one update, a step counter."""
  rng = np.random.default_rng(seed)
  params = {"Conv_0": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 8)), jnp.float32)},
            "Dense_0": {"kernel": jnp.asarray(rng.normal(size=(16, 10)), jnp.bfloat16),
                        "bias": jnp.asarray(rng.normal(size=(10,)), jnp.float32)}}
  tx = optax.adam(1e-3)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  _, opt_state = tx.update(grads, tx.init(params), params)
  return {"params": params, "batch_stats": {"mean": jnp.asarray(rng.normal(size=(8,)), jnp.float32)},
          "opt_state": opt_state, "step": jnp.int32(seed)}


def grain_iterator():
  return iter(grain.MapDataset.range(1000).shuffle(seed=3).batch(8).to_iter_dataset())


def abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


STEPS = (4, 8)
STATES = {s: make_state(s) for s in STEPS}
METAS = {s: {"epoch_loss_sum": 1.25 * s, "wall_time_s": [3.5, float(s)]} for s in STEPS}


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
  """A workdir with checkpoints at steps 4 and 8 of a streaming run; the iterator states saved with them."""
  workdir = tmp_path_factory.mktemp("streaming")
  manager, it, positions, done = ckpt.create_manager(str(workdir), keep=3), grain_iterator(), {}, 0
  for s in STEPS:
    for _ in range(s - done):
      next(it)
    done, positions[s] = s, it.get_state()
    ckpt.save(manager, s, STATES[s], ckpt.iterator_save_args(it), METAS[s])
  return workdir, positions


@pytest.fixture(scope="module")
def resident(tmp_path_factory):
  """A workdir with checkpoints at steps 4 and 8 of a device-resident run (the JSON position)."""
  workdir = tmp_path_factory.mktemp("resident")
  manager = ckpt.create_manager(str(workdir), keep=3)
  for s in STEPS:
    ckpt.save(manager, s, STATES[s], ckpt.position_save_args(s))
  return workdir


def copy(workdir, tmp_path):
  dst = tmp_path / "run"
  shutil.copytree(workdir, dst)
  return dst


def step_files(workdir, step: int) -> list[str]:
  folder = os.path.join(workdir, "checkpoints", str(step))
  return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)


def flip(path, n: int = 4) -> None:
  """Inverts ``n`` bytes in the middle of a file."""
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    at = max(0, len(data) // 2 - n // 2)
    for i in range(at, min(len(data), at + n)):
      data[i] ^= 0xFF
    f.seek(0)
    f.write(data)


def restore_streaming(workdir):
  it = grain_iterator()
  manager = ckpt.create_manager(str(workdir), keep=3)
  return ckpt.restore_latest(manager, abstract(STATES[8]), lambda: ckpt.iterator_restore_args(it)), it, manager


def assert_identical(a, b):
  """Same tree, dtypes, shapes and bytes."""
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (p, x), (_, y) in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(p)
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(p)


def warnings(out: str) -> list[str]:
  return [line for line in out.splitlines() if line.startswith("WARNING")]


def test_patterns_cover_every_file(streaming):
  """Every file of a saved step belongs to exactly one item of FILES (so the flip test reaches all of them)."""
  for rel in step_files(streaming[0], 8):
    assert sum(fnmatch.fnmatch(rel, p) for _, p in PATTERNS) == 1, rel


def test_verified_checkpoint_restores_bit_identical(streaming, tmp_path, capsys):
  workdir, positions = streaming
  (step, state, meta), it, _ = restore_streaming(copy(workdir, tmp_path))
  assert step == 8 and meta == METAS[8]
  assert_identical(state, STATES[8])
  assert it.get_state() == positions[8]
  assert warnings(capsys.readouterr().out) == []


@pytest.mark.parametrize("item,pattern", PATTERNS, ids=[p for _, p in PATTERNS])
def test_flipped_bytes_in_each_file_fall_back(streaming, tmp_path, capfd, item, pattern):
  """Four bytes flipped in any file of the newest step: one warning naming it, the previous step restored."""
  workdir, positions = streaming
  matches = [r for r in step_files(workdir, 8) if fnmatch.fnmatch(r, pattern)]
  assert matches, f"no {item} file matches {pattern}"
  for i, rel in enumerate(matches):
    run = tmp_path / f"run{i}"
    shutil.copytree(workdir, run)
    flip(os.path.join(run, "checkpoints", "8", rel))
    (step, state, meta), it, manager = restore_streaming(run)
    out, err = capfd.readouterr()
    assert step == 4 and meta == METAS[4] and it.get_state() == positions[4]
    assert_identical(state, STATES[4])
    assert warnings(out) == [f"WARNING: checkpoint at step 8 does not verify (file {rel}: digest mismatch); "
                             "falling back to step 4"]
    assert "Traceback" not in err and "Exception ignored" not in err
    assert manager.all_steps() == [4] and not os.path.exists(os.path.join(run, "checkpoints", "8"))


def resign(run, step: int, **changes) -> None:
  """Rewrites a step's manifest with ``changes`` and its files' current digests (as if saved so)."""
  folder = os.path.join(run, "checkpoints", str(step))
  manifest, why = ckpt.read_manifest(folder)
  assert why is None
  manifest.update(changes, files=ckpt.file_digests(folder))
  ckpt.write_manifest(folder, manifest)


def test_restored_array_checked_against_its_digest(streaming, tmp_path, capsys):
  """Files that match the manifest but an array whose recorded digest differs: named, skipped."""
  run = copy(streaming[0], tmp_path)
  folder = os.path.join(run, "checkpoints", "8")
  arrays = ckpt.read_manifest(folder)[0]["arrays"]
  name = "state['opt_state'][0].nu['Conv_0']['kernel']"
  assert name in arrays
  resign(run, 8, arrays={**arrays, name: ckpt.array_digest(STATES[4]["params"]["Conv_0"]["kernel"])})
  (step, _, _), _, _ = restore_streaming(run)
  assert step == 4
  assert warnings(capsys.readouterr().out) == [
      f"WARNING: checkpoint at step 8 does not verify ({name}: digest mismatch); falling back to step 4"]


@pytest.mark.parametrize("rel,text,reason", [
    ("data/process_0-of-1.json", '{"next_index": 5}', "data iterator state: digest mismatch"),
    ("meta/metadata", '{"epoch_loss_sum": 0.0}', "meta: digest mismatch")])
def test_restored_position_and_meta_checked(streaming, tmp_path, capsys, rel, text, reason):
  """A valid but different input position or meta item (files re-digested): caught after loading."""
  run = copy(streaming[0], tmp_path)
  with open(os.path.join(run, "checkpoints", "8", rel), "w") as f:
    f.write(text)
  resign(run, 8)
  (step, _, meta), it, _ = restore_streaming(run)
  assert step == 4 and meta == METAS[4] and it.get_state() == streaming[1][4]
  assert warnings(capsys.readouterr().out) == [
      f"WARNING: checkpoint at step 8 does not verify ({reason}); falling back to step 4"]


def test_missing_manifest_is_skipped(streaming, tmp_path, capsys):
  run = copy(streaming[0], tmp_path)
  os.remove(os.path.join(run, "checkpoints", "8", ckpt.MANIFEST))
  (step, state, _), _, manager = restore_streaming(run)
  assert step == 4 and manager.all_steps() == [4]
  assert_identical(state, STATES[4])
  assert warnings(capsys.readouterr().out) == [
      "WARNING: checkpoint at step 8 does not verify (missing manifest); falling back to step 4"]


def test_saves_interrupted_before_any_manifest_start_the_run_afresh(streaming, tmp_path, capsys):
  """A kill between orbax's save and xnn's manifest of the first checkpoints: no run to resume, nothing loaded."""
  from xnn.train import resume
  run = copy(streaming[0], tmp_path)
  for s in STEPS:
    os.remove(os.path.join(run, "checkpoints", str(s), ckpt.MANIFEST))
  assert ckpt.checkpoint_steps(str(run)) == [4, 8] and ckpt.checkpoint_steps(str(run), complete=True) == []
  assert resume.check(str(run), None) is None            # a fresh run: config.json is not even read
  restored, _, manager = restore_streaming(run)
  assert restored is None and manager.all_steps() == []
  assert warnings(capsys.readouterr().out) == [
      f"WARNING: the checkpoints at step 8, 4 in {run / 'checkpoints'} were interrupted while being saved "
      "(no manifest); starting afresh"]


def test_none_verifies_raises_listing_each_step(streaming, tmp_path, capsys):
  run = copy(streaming[0], tmp_path)
  bad = [r for r in step_files(run, 8) if r.startswith("state/ocdbt.process_0/d/")][0]
  flip(os.path.join(run, "checkpoints", "8", bad))
  os.remove(os.path.join(run, "checkpoints", "4", ckpt.MANIFEST))
  with pytest.raises(ckpt.CheckpointError) as e:
    restore_streaming(run)
  assert isinstance(e.value, ValueError)
  assert str(e.value) == (f"no checkpoint in {run / 'checkpoints'} verifies: "
                          f"step 8 (file {bad}: digest mismatch), step 4 (missing manifest)")
  assert sorted(os.listdir(run / "checkpoints")) == ["4", "8"]     # nothing deleted
  assert warnings(capsys.readouterr().out) == []


RESTORE_AND_PRINT = """
import sys
sys.path.insert(0, "tests")
import test_checkpoint_integrity as t
(step, _, _), _, _ = t.restore_streaming(sys.argv[1])
print("restored", step)
"""


def test_orbax_failure_is_one_warning(streaming, tmp_path):
  """Truncated array files that the manifest agrees with: orbax fails to read them; one line, no noise.

  In a fresh interpreter, logging as the ``xnn`` command leaves it (pytest would catch the
  "Exception ignored" reports of the failed reads itself).
  """
  run = copy(streaming[0], tmp_path)
  folder = os.path.join(run, "checkpoints", "8")
  for rel in step_files(run, 8):
    if fnmatch.fnmatch(rel, "state/*d/*"):
      os.truncate(os.path.join(folder, rel), 10)
  resign(run, 8)
  proc = subprocess.run([sys.executable, "-c", RESTORE_AND_PRINT, str(run)], capture_output=True, text=True,
                        cwd=REPO, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert len(lines) == 2 and lines[1] == "restored 4", proc.stdout
  assert lines[0].startswith("WARNING: checkpoint at step 8 does not verify (ValueError: ")
  assert lines[0].endswith("); falling back to step 4")
  assert proc.stderr.strip() == "", proc.stderr[-3000:]


def test_device_resident_position(resident, tmp_path, capsys):
  """The JSON position round-trips; flipped bytes in it fall back; a checkpoint without meta gives {}."""
  run = copy(resident, tmp_path)
  manager = ckpt.create_manager(str(run), keep=3)
  step, state, meta = ckpt.restore_latest(manager, abstract(STATES[8]), ckpt.position_restore_args)
  assert (step, meta) == (8, {})
  assert_identical(state, STATES[8])
  rel = [r for r in step_files(run, 8) if r.startswith("data/") and "commit" not in r]
  assert len(rel) == 1
  flip(os.path.join(run, "checkpoints", "8", rel[0]), n=2)
  manager = ckpt.create_manager(str(run), keep=3)
  step, state, _ = ckpt.restore_latest(manager, abstract(STATES[8]), ckpt.position_restore_args)
  assert step == 4
  assert_identical(state, STATES[4])
  assert warnings(capsys.readouterr().out) == [
      f"WARNING: checkpoint at step 8 does not verify (file {rel[0]}: digest mismatch); falling back to step 4"]


def test_keep_counts_verified_steps_only(tmp_path):
  """keep=2 keeps the newest two verified steps; a step without a manifest never displaces a verified one."""
  manager = ckpt.create_manager(str(tmp_path), keep=2)
  for s in (1, 2, 3):
    ckpt.save(manager, s, STATES[4], ckpt.position_save_args(s))
  assert manager.all_steps() == [2, 3]
  os.remove(os.path.join(tmp_path, "checkpoints", "3", ckpt.MANIFEST))     # a kill before the manifest
  ckpt.save(manager, 4, STATES[8], ckpt.position_save_args(4))
  assert manager.all_steps() == [2, 4]
  assert not any(".tmp" in f for f in os.listdir(os.path.join(tmp_path, "checkpoints", "4")))


def test_empty_workdir_restores_nothing(tmp_path):
  manager = ckpt.create_manager(str(tmp_path), keep=2)
  assert ckpt.restore_latest(manager, abstract(STATES[4]), ckpt.position_restore_args) is None


AVAILABLE = [a for a in ckpt.ALGORITHMS if a != "xxh3_128" or ckpt.xxhash is not None]


@pytest.mark.parametrize("algorithm", AVAILABLE)
def test_each_digest_algorithm(tmp_path, monkeypatch, capsys, algorithm):
  """A manifest written with any of the digests verifies, and catches a flipped byte in an array file."""
  monkeypatch.setattr(ckpt, "ALGORITHM", algorithm)
  manager = ckpt.create_manager(str(tmp_path), keep=3)
  for s in STEPS:
    ckpt.save(manager, s, STATES[s], ckpt.position_save_args(s))
  assert ckpt.read_manifest(os.path.join(tmp_path, "checkpoints", "8"))[0]["algorithm"] == algorithm
  rel = [r for r in step_files(tmp_path, 8) if r.startswith("state/ocdbt.process_0/d/")][-1]
  flip(os.path.join(tmp_path, "checkpoints", "8", rel))
  manager = ckpt.create_manager(str(tmp_path), keep=3)
  step, state, _ = ckpt.restore_latest(manager, abstract(STATES[8]), ckpt.position_restore_args)
  assert step == 4
  assert_identical(state, STATES[4])
  assert warnings(capsys.readouterr().out) == [
      f"WARNING: checkpoint at step 8 does not verify (file {rel}: digest mismatch); falling back to step 4"]


def test_unknown_digest_in_manifest_does_not_verify(streaming, tmp_path, capsys):
  run = copy(streaming[0], tmp_path)
  folder = os.path.join(run, "checkpoints", "8")
  with open(os.path.join(folder, ckpt.MANIFEST), "rb") as f:
    text = f.read().rstrip(b"\n").rpartition(b"\n")[0]
  with open(os.path.join(folder, ckpt.MANIFEST), "wb") as f:
    f.write(text + b"\nmd4 0123\n")
  (step, _, _), _, _ = restore_streaming(run)
  assert step == 4
  assert warnings(capsys.readouterr().out) == [
      f"WARNING: checkpoint at step 8 does not verify (file {ckpt.MANIFEST}: unknown digest 'md4', expected one of "
      f"{', '.join(ckpt.ALGORITHMS)}); falling back to step 4"]

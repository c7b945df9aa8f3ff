"""What checkpoint integrity costs next to the save itself: a ResNet-50 train state.

    python benchmarks/checkpoint_digest.py [--optimizer adam|sgd] [--repeats 3] [--json FILE]

The state is ResNet-50's (ImageNet head, 1000 classes) as ``create_train_state``
builds it, its shapes from ``jax.eval_shape`` and its values random normal (random
bytes compress like trained weights, unlike zeros): parameters, BatchNorm statistics
and the optimiser state (Adam: two moments; SGD momentum: one trace). Timed, the
median of ``--repeats``, in one process (the files are in the page cache, as they are
right after a save):

* orbax alone: ``CheckpointManager.save`` + wait (state + JSON position), and ``restore``;
* xnn's digest parts: every array (``tree_digests``), every file of the step
  (``file_digests``), for each of ``xnn.train.checkpoint.ALGORITHMS`` (XXH3-128 only
  where the ``xxhash`` package is installed);
* xnn's whole ``save`` and ``restore_latest`` (orbax + manifest + verification) with
  the default digest.

Results are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from common import finish



def resnet50_state(optimizer: str):
  """ResNet-50's train state with random normal values, on the default device."""
  from xnn import models
  from xnn.train.step import create_train_state
  model = models.build("resnet50", num_classes=1000)
  tx = optax.adam(1e-3) if optimizer == "adam" else optax.sgd(0.1, momentum=0.9)
  shapes = jax.eval_shape(lambda k: create_train_state(model, tx, k, (jnp.zeros((1, 224, 224, 3)),)),
                          jax.random.key(0))
  rng = np.random.default_rng(0)
  leaves, treedef = jax.tree.flatten(shapes)
  values = [jnp.asarray(rng.normal(0, 0.05, s.shape).astype(s.dtype)) if jnp.issubdtype(s.dtype, jnp.floating)
            else jnp.zeros(s.shape, s.dtype) for s in leaves]
  return jax.tree.unflatten(treedef, values)


def interleaved(fns: dict, repeats: int) -> dict:
  """Median seconds of each of ``fns`` over ``repeats`` rounds, the functions alternating within a round."""
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t)
  return {k: statistics.median(v) for k, v in times.items()}


def measure(state, repeats: int) -> dict:
  from xnn.train import checkpoint as ckpt
  out = {"algorithms": [a for a in ckpt.ALGORITHMS if a != "xxh3_128" or ckpt.xxhash is not None],
         "default": ckpt.ALGORITHM}
  nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  out.update(state_mb=nbytes / 1e6, arrays=len(jax.tree.leaves(state)))
  with tempfile.TemporaryDirectory() as wd:
    plain = ocp.CheckpointManager(os.path.join(wd, "plain"), options=ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=False), item_names=("state", "data"))
    manager = ckpt.create_manager(os.path.join(wd, "xnn"), keep=repeats + 1)    # no deletions timed
    steps = iter(range(1, 1000))

    def orbax_save():
      plain.save(next(steps), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      data=ckpt.position_save_args(0)), force=True)
      plain.wait_until_finished()

    out.update(interleaved({
        "orbax_save_s": orbax_save,
        "xnn_save_s": lambda: ckpt.save(manager, next(steps), state, ckpt.position_save_args(0), {"loss": 1.0})},
        repeats))
    last = plain.latest_step()
    out.update(interleaved({
        "orbax_restore_s": lambda: plain.restore(last, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ckpt.position_restore_args())),
        "xnn_restore_s": lambda: ckpt.restore_latest(manager, abstract, ckpt.position_restore_args)}, repeats))
    folder = os.path.join(wd, "plain", str(last))
    out["files"] = sum(len(f) for _, _, f in os.walk(folder))
    for a in out["algorithms"]:
      out.update(interleaved({f"{a}_arrays_s": lambda a=a: ckpt.tree_digests(state, algorithm=a),
                              f"{a}_files_s": lambda a=a: ckpt.file_digests(folder, algorithm=a)}, repeats))
  return out


def report(r: dict) -> None:
  print(f"ResNet-50 train state: {r['arrays']} arrays, {r['state_mb']:.0f} MB, {r['files']} files per step")
  print(f"orbax save {r['orbax_save_s']:.3f} s, restore {r['orbax_restore_s']:.3f} s")
  for a in r["algorithms"]:
    arrays, files = r[f"{a}_arrays_s"], r[f"{a}_files_s"]
    rate = r["state_mb"] / 1e3 / arrays
    print(f"{a:8s} arrays {arrays:.3f} s ({rate:.2f} GB/s), files {files:.3f} s; "
          f"save adds {(arrays + files) / r['orbax_save_s']:.0%}, restore adds "
          f"{(arrays + files) / r['orbax_restore_s']:.0%}")
  print(f"xnn save with {r['default']} (orbax + digests + manifest) {r['xnn_save_s']:.3f} s "
        f"(+{r['xnn_save_s'] / r['orbax_save_s'] - 1:.0%}), restore_latest {r['xnn_restore_s']:.3f} s "
        f"(+{r['xnn_restore_s'] / r['orbax_restore_s'] - 1:.0%})")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  r = measure(resnet50_state(args.optimizer), args.repeats)
  r["optimizer"], r["backend"] = args.optimizer, jax.default_backend()
  report(r)
  return finish(r, args.json)


if __name__ == "__main__":
  sys.exit(main())

"""Roofline estimate (Williams, Waterman & Patterson 2009): t = max(FLOPs / peak, bytes / bandwidth).

Presets are dense (no sparsity) peak rates and HBM bandwidth from the vendors'
data sheets:
  * H100 SXM5: 989 TFLOP/s bf16 tensor, 67 TFLOP/s fp32, 3.35 TB/s HBM3
    (NVIDIA H100 Tensor Core GPU datasheet).
  * H200 SXM: 989 TFLOP/s bf16, 67 TFLOP/s fp32, 4.8 TB/s HBM3e
    (NVIDIA H200 Tensor Core GPU datasheet).
  * TPU v4: 275 TFLOP/s bf16, 1,200 GB/s HBM2 (Google Cloud TPU v4 documentation).
  * TPU v5e: 197 TFLOP/s bf16, 819 GB/s HBM2 (Google Cloud TPU v5e documentation).
On TPUs float32 matrix products run on the bf16 MXU at JAX's default precision,
so the f32 preset equals the bf16 peak.
"""

from __future__ import annotations

import dataclasses
import time


@dataclasses.dataclass(frozen=True)
class Device:
  name: str
  flops_bf16: float
  flops_f32: float
  bandwidth: float       # bytes / s
  source: str = ""

  def peak(self, dtype: str) -> float:
    return self.flops_bf16 if dtype in ("bfloat16", "float16") else self.flops_f32


DEVICES = {
    "h100": Device("H100 SXM5", 989e12, 67e12, 3.35e12, "NVIDIA H100 datasheet"),
    "h200": Device("H200 SXM", 989e12, 67e12, 4.8e12, "NVIDIA H200 datasheet"),
    "tpu-v4": Device("TPU v4", 275e12, 275e12, 1.2e12, "cloud.google.com/tpu/docs/v4"),
    "tpu-v5e": Device("TPU v5e", 197e12, 197e12, 0.819e12, "cloud.google.com/tpu/docs/v5e"),
}


def measure(n: int = 1024, mem_mb: int = 64, repeats: int = 3) -> Device:
  """This machine's float32 matmul rate and memory (copy) bandwidth."""
  import jax
  import jax.numpy as jnp

  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  t = min(_time(lambda: mm(a).block_until_ready()) for _ in range(repeats))
  flops = 2 * n ** 3 / t
  b = jnp.ones((mem_mb * 2 ** 20 // 4,), jnp.float32)
  cp = jax.jit(lambda x: x + 1)
  cp(b).block_until_ready()
  t = min(_time(lambda: cp(b).block_until_ready()) for _ in range(repeats))
  return Device(f"measured ({jax.devices()[0].platform})", flops, flops, 2 * b.nbytes / t, "measured")


def _time(f) -> float:
  t0 = time.perf_counter()
  f()
  return time.perf_counter() - t0


def get_device(name: str) -> Device:
  key = name.lower()
  if key == "measure":
    return measure()
  if key not in DEVICES:
    raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)} or 'measure'")
  return DEVICES[key]


def estimate(flops: int, traffic_bytes: int, device: Device, dtype: str = "float32") -> tuple[float, str]:
  """(seconds, 'compute' | 'memory') for one layer."""
  tc, tm = flops / device.peak(dtype), traffic_bytes / device.bandwidth
  return max(tc, tm), ("compute" if tc >= tm else "memory")

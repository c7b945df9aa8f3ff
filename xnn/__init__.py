"""xnn: design, cost and train neural networks with JAX and Flax.

Sub-packages:
  xnn.models  -- Flax (linen) modules and the string-keyed model registry.
  xnn.data    -- TFDS builders (TensorFlow-free), grain input pipelines.
  xnn.train   -- the data-parallel training loop driven by ml-collections configs.
"""

__version__ = "0.1.0"

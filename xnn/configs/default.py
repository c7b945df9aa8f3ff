"""The embedded default: LeNet-5 on the bundled UCI digits, 2-core CPU friendly.

Command:   xnn train                      (same as: xnn train --config xnn/configs/default.py)
Runtime:   about 15-20 s on a 2-core CPU, compilation included (device-resident input).
Expected:  test accuracy >= 97% (README results table has the measured figure).

Every other config starts from this one (``get_config()``) and changes fields;
the field set here is the schema (``xnn.configs.schema``): an unknown key, a value
of the wrong type or a value outside a field's range (``schema.RANGES``: e.g.
``keep_checkpoints >= 1``, ``label_smoothing`` in [0, 1), finite rates) is an error
before anything is read or compiled; a new field needs its range there.
``model.kwargs`` is open: any factory argument of the model, e.g.
``--config.model.kwargs.shortcut=B``.
"""

import ml_collections

from xnn.ops.backend import default_cpu_conv


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "lenet5"
  c.model.num_classes = 0          # 0: the dataset's number of classes
  # compute dtype: float32 | bfloat16 (params stay float32). float16 is refused: its 5-bit exponent needs
  # loss scaling, which xnn does not do; bfloat16 has float32's exponent range and needs none.
  c.model.dtype = "float32"
  c.model.kwargs = ml_collections.ConfigDict()   # factory arguments, e.g. shortcut="B", head="pixel"
  # weight of each auxiliary classifier's loss (GoogLeNet aux_logits=True, Inception-v3); -1: the model's
  # published weight (xnn.models.ModelInfo.aux_loss_weight: GoogLeNet 0.3, Inception-v3 0.4)
  c.model.aux_loss_weight = -1.0

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.data_dir = ""             # "": TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.data.manual_dir = ""           # original archives for offline preparation
  c.data.root = ""                 # image_folder: folder with train/<class>/* and test/<class>/*
  c.data.train_split = "train"
  c.data.test_split = "test"
  c.data.image_size = 32           # 0: native size; else bilinear resize to image_size^2
  c.data.channels = 3              # 0: native; 3: replicate grey images (the LeNet-5 homework's net is 32x32x3)
  c.data.augment = "none"          # none | pad_crop_flip | random_crop
  c.data.pad = 4                   # pad_crop_flip padding
  c.data.flip = True               # horizontal flip in pad_crop_flip / random_crop
  c.data.crop_size = 0             # random_crop (train) / centre crop (test) size
  c.data.normalize = "per_channel" # per_channel | minus_one_one ((x-0.5)/0.5) | none
  c.data.mixup_alpha = 0.0         # Mixup (Zhang et al. 2018): lam ~ Beta(a, a) per batch; 0: off
  c.data.cutmix_alpha = 0.0        # CutMix (Yun et al. 2019); both > 0: each batch one of them (p = 0.5)
  c.data.as_sequence = ""          # images as sequences: rows (H steps of W*C) | pixels (H*W steps of C)
  c.data.seq_length = 10           # copy/reverse/sort/addition: sequence length (digits per operand)
  c.data.vocab = 10                # ... number of symbols (addition: the base)
  c.data.num_train = 20000         # ... generated training examples (fixed seed)
  c.data.num_test = 2000           # ... generated test examples (another fixed seed)
  c.data.threads = 2               # read-ahead threads building batches (order is kept)
  c.data.prefetch = 4              # batches read ahead
  c.data.worker_count = 0          # grain worker processes (0: in the main process)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64          # global batch, split over every device of every host
  c.train.num_epochs = 20          # 0 only with num_steps > 0
  c.train.num_steps = 0            # >0 overrides num_epochs (iteration-based recipes)
  c.train.eval_batch_size = 256
  c.train.eval_every_epochs = 1.0  # > 0; fractions allowed
  c.train.log_every_steps = 10
  c.train.checkpoint_every_steps = 0   # 0: at every eval
  c.train.keep_checkpoints = 3     # >= 1: a re-run resumes from the newest
  c.train.bn_stats = "global"      # global | per_device | groups (see docs in xnn/train/step.py)
  c.train.bn_group_size = 0        # examples per BN group when bn_stats == "groups"
  c.train.device_resident = "auto"   # auto | on | off: training set on the devices (auto: when it fits)
  c.train.device_resident_max_mb = 1024  # auto/on: only if the float32 set fits in this per device
  c.train.steps_per_dispatch = 0   # device-resident: steps per lax.scan dispatch (0: auto)
  c.train.label_smoothing = 0.0    # in [0, 1)
  c.train.ema_decay = 0.0          # in [0, 1): moving average of the weights, evaluated too; 0: off
  c.train.grad_accum_steps = 1     # micro-batches per optimiser step (batch_size / k examples each); 1: off
  c.train.init_from = ""           # a workdir: this (new) run starts from its newest verified weights
  c.train.compilation_cache = "user"   # user | workdir | off | DIR: JAX's persistent cache (xnn/train/compilation.py)
  c.train.compilation_cache_min_s = 0.5  # store programs that took at least this long to compile
  c.train.compilation_cache_max_gb = 4.0 # LRU bound (and file-locked for parallel runs); <= 0: unbounded
  c.train.cpu_conv = default_cpu_conv()  # auto | onednn | xnn | xla: the zoo's CPU convolutions (xnn/ops/backend.py)
  c.train.progress_bar = True      # a bar on a terminal, a line every progress_every_s seconds otherwise
  c.train.progress_every_s = 30.0

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"        # sgd | adam | adamw
  c.optimizer.learning_rate = 2e-3 # peak learning rate
  c.optimizer.momentum = 0.9       # sgd
  c.optimizer.nesterov = False     # sgd
  c.optimizer.b1 = 0.9             # adam/adamw
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0   # sgd/adam: L2 added to the gradient; adamw: decoupled
  c.optimizer.weight_decay_mask = "all"  # all (He et al.) | no_bn_bias: no decay on norm scales/offsets, biases
  c.optimizer.grad_clip_norm = 0.0 # 0: off

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "warmup_cosine"  # constant | piecewise | warmup_cosine | warmup_linear
  c.schedule.unit = "step"           # step | epoch: epoch holds the rate for a whole epoch
  c.schedule.warmup = 2.0            # warmup length, in epochs
  c.schedule.init_value = 1e-5       # warmup start
  c.schedule.end_value = 1e-5        # cosine end
  c.schedule.cosine = "half"         # half: optax/SGDR (1+cos)/2; quarter: cos over [0, pi/2]
  c.schedule.boundaries = ()         # piecewise: steps, e.g. (32000, 48000) (CLI: ...boundaries=32000,48000)
  c.schedule.scale = 0.1             # piecewise: multiply the rate at each boundary
  c.schedule.scales = ()             # piecewise: per-boundary factors, e.g. (10, 0.1, 0.1)
  return c


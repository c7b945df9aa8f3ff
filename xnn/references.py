"""Published results that xnn's experiments draw and tabulate beside their own.

Each figure names its source; experiments compare their final-epoch numbers with
these, never their best epoch.
"""

# He et al. 2015, "Deep Residual Learning for Image Recognition", Table 6: CIFAR-10 test
# error (%) of the residual networks (ResNet-110: best of 5 runs; mean 6.61 +- 0.16).
# The plain networks appear only in Figure 6, with no numbers.
HE2015_CIFAR10_TEST_ERROR = {
    "resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43,
    "resnet1202": 7.93,
}
HE2015_RESNET110_MEAN_ERROR = 6.61

# The course recipe (the course's design homework, xnn/configs/cifar10_course.py): CIFAR-10
# test accuracy of MobileNet V2 (28x28 crops, the homework's 30-epoch training log) and of
# the pre-activation ResNetV2b (the note in the course code xNNs_Code_031_CIFAR_ResNetV2b.py,
# 60 epochs).
COURSE_CIFAR10_ACCURACY = {"mobilenet_v2_28": 0.8933, "resnet_v2b": 0.914}


def reference_accuracy(model_name: str) -> tuple[float, str] | None:
  """(CIFAR-10 test accuracy, source) published for ``model_name``, or None."""
  if model_name in HE2015_CIFAR10_TEST_ERROR:
    return 1.0 - HE2015_CIFAR10_TEST_ERROR[model_name] / 100.0, "He et al. 2015, Table 6"
  if model_name in COURSE_CIFAR10_ACCURACY:
    return COURSE_CIFAR10_ACCURACY[model_name], "the course's design homework"
  return None

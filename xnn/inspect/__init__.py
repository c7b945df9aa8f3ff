"""Look inside a trained network (the lecture notes "Design", "CNNs: Visualization" and "Receptive Field
Size"): the library behind ``xnn inspect`` (``xnn/commands/inspect.py``), one concept per module.

* ``stages``         the values a model sows into ``intermediates``: its stage outputs, attention weights
* ``feature_maps``   a grid of channel maps per stage for a few test images
* ``filters``        the first convolution's filters as tiles
* ``saliency``       gradient of the predicted class score (Simonyan et al. 2014), SmoothGrad (Smilkov et al.
                     2017), integrated gradients (Sundararajan et al. 2017)
* ``feature_vis``    an input optimised to excite a channel or a class (Olah et al. 2017), with jitter, blur
                     and a decorrelated (Fourier, colour) parameterisation
* ``erf``            the effective receptive field (Luo et al. 2016) at initialisation and at every
                     checkpoint, beside the theoretical field of ``xnn.cost``
* ``probes``         linear probes on each stage's pooled features (Alain & Bengio 2016)
* ``attention``      attention weights per layer and head
* ``report``         ``inspect.json`` and ``index.md``

Each function takes a model, its variables and arrays; reading a run (config, checkpoints, data) is
the command's.
"""

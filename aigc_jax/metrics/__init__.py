"""Sample-quality metrics of generated images, on the project's own classifier or Inception-V3.

One module per metric, on (N, D) feature arrays (FID and IS in float64 numpy, KID and
precision/recall on the device in float32):

- `fid`: feature statistics, the Frechet distance, FID.
- `kid`: KID (unbiased MMD^2 with a cubic kernel, over subsets).
- `precision_recall`: improved precision and recall (k-NN balls).
- `inception_score`: IS and label accuracy, on class probabilities / logits.
- `feature_arrays`: the input check they share.

The feature classifier and the evaluation of images:

- `classifier_net`: the CNN, its training recipe and key, `to_input`, a trained `Classifier`.
- `classifier_train`: the classifier's own small training loop.
- `classifier`: the on-disk cache and `load_or_train`, the usual entry point.
- `sample_metrics`: `evaluate_samples` (all metrics of fake images) and the real-vs-real floors.

Inception-V3 as pytorch-fid computes FID with it (the metrics' other network):

- `inception`: the Flax port, the mapping of pytorch-fid's state dict, `Inception` (features).
- `inception_resize`: pytorch-fid's bilinear and clean-fid's bicubic resize to 299x299.
- `inception_weights`: the weights file (argument, variable, cache, download) read safely.

docs/metrics.md describes how the metrics and floors are computed.
"""

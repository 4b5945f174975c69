"""Sample-quality metrics: FID, KID, precision/recall, IS on the project's own classifier.

`fid` holds the metrics on feature arrays (numpy, float64); `classifier` trains and caches the
Fashion-MNIST feature extractor and evaluates generated images against real ones.
"""

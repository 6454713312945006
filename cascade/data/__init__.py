"""Training data, in the order it is read.

- sources.py: map-style sources, indexed not loaded (built-in photos, image folders, shards, the Hub)
- crops.py: random crops of a source's images as examples; previews.py: fixed crops for previews
- shards.py: what a stream reads (parquet row groups, tar members, folder files); streams.py: the
  streamed loader (partitions, exact resume, process-count changes); packing.py: `python -m cascade pack`
- label_maps.py: label maps (reading, nearest resizing, instance boundaries, masks); paired.py: paired
  image / label-map data; layouts.py: the built-in offline pairs
- one_image.py: one photo (bounded loading) and its crops at many scales (one-shot cascades)
"""

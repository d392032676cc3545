"""Instance segmentation: one label per object, from any zoo architecture.

A network is trained on class maps made from instance labels (:mod:`.targets`), a decoder turns its
class probabilities into objects (:mod:`.decode`), block by block for images of any size with objects
merged across block seams (:mod:`.blocks`); :mod:`.metrics` scores objects (F1, AP) and
:mod:`.measure` tabulates them.
"""

from __future__ import annotations

from segarch.instances.blocks import BlockDecoding, DecodingCancelled, decode_blocks
from segarch.instances.decode import DECODERS, BoundaryDecoder, DistanceDecoder, get_decoder, seeded_watershed
from segarch.instances.measure import measure, table_summary, write_table
from segarch.instances.metrics import THRESHOLDS, Matching, match, match_many
from segarch.instances.predict import decoder_for, predict_instances
from segarch.instances.targets import boundary_classes, distance_classes, edge_distance, normalized_distance

__all__ = [
    "decode_blocks", "BlockDecoding", "DecodingCancelled",
    "measure", "table_summary", "write_table", "predict_instances", "decoder_for",
    "DECODERS", "BoundaryDecoder", "DistanceDecoder", "get_decoder", "seeded_watershed",
    "THRESHOLDS", "Matching", "match", "match_many",
    "boundary_classes", "distance_classes", "edge_distance", "normalized_distance",
]

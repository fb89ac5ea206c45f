"""Big models: checkpoint inspect and convert, placement over GPUs/CPU/disk, and measured loading.

The transformers guide "Instantiate a big model" as things computed and measured:
  inspection.py  shards, bytes and parameters per shard and dtype, read from headers only
  convert.py     .bin (or safetensors) -> sharded safetensors, one tensor at a time, verified
  placement.py   a device_map over GPUs + CPU + disk whose budgets leave room for the run
  rss.py         peak resident memory while a block runs (convert, load_worker)
  loading.py     load time and peak RSS of from_pretrained's loading paths, each in a fresh process
"""

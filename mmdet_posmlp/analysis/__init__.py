"""Library code behind tools/analysis/: model complexity, inference speed, training curves.

Submodules (imported on use, so that ``import mmdet_posmlp`` does not pull matplotlib in):

- :mod:`.complexity`: parameters and FLOPs of a detector and of its backbone
  (tools/analysis/get_flops.py);
- :mod:`.benchmark`: inference FPS of a detector (tools/analysis/benchmark_fps.py);
- :mod:`.logs`: loss and mAP curves from mmengine's scalars.json (tools/analysis/plot_logs.py).
"""

"""Library code behind tools/analysis/: model complexity and inference speed.

- :mod:`.flop_handles`: mmengine FLOP-counter handles for PosMLP's operators (registered by
  ``import mmdet_posmlp``, so that mmdet's own get_flops.py counts the token mixing);

and, imported on use so that ``import mmdet_posmlp`` stays light:

- :mod:`.complexity`: parameters and FLOPs of a detector and of its backbone
  (tools/analysis/get_flops.py);
- :mod:`.benchmark`: inference FPS of a detector (tools/analysis/benchmark_fps.py);
- :mod:`.table3`: the parameter column of the PosMLP paper's Table 3, every detector built from
  its config against the paper's figure (tools/analysis/table3_params.py);
- :mod:`.training_logs`: loss and mAP curves from mmengine's scalars.json
  (tools/analysis/plot_logs.py, the demo and the backbone comparison).

They build and feed detectors through ``mmdet_posmlp.detector_io``, as deployment does.
"""

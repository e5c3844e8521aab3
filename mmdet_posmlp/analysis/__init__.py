"""Library code behind tools/analysis/: :mod:`.complexity` (parameters and FLOPs, get_flops.py),
:mod:`.benchmark` (inference FPS, benchmark_fps.py), :mod:`.table3` (the parameter column of the
PosMLP paper's Table 3, table3_params.py) and :mod:`.training_logs` (loss and mAP curves:
plot_logs.py, the demo, the comparison), imported on use so that ``import mmdet_posmlp`` stays
light; and :mod:`.flop_handles` (PosMLP's FLOP-counter handles for mmengine), registered by it.
"""
